import torch

from b2b.rollout import (Rollout, completion_logprobs, completion_mask, decode_completions,
                         encode_prompts, last_token_index, position_ids, rollout_logprobs,
                         sample_completions)
from b2b.reward import reward_scores

EOS = 2


def test_completion_mask_keeps_first_eos_and_masks_after():
    ids = torch.tensor([[5, 6, EOS, EOS, EOS],   # ends at index 2; pad == eos after it
                        [5, EOS, 7, 8, EOS],     # tokens after the first eos are masked too
                        [5, 6, 7, 8, 9],         # never ended: everything counts
                        [EOS, EOS, EOS, EOS, EOS]])
    want = torch.tensor([[1, 1, 1, 0, 0],
                         [1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 1],
                         [1, 0, 0, 0, 0]])
    assert torch.equal(completion_mask(ids, EOS), want)


def test_last_token_index_any_padding_side():
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    both = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
    assert last_token_index(left).tolist() == [3, 3, 3]
    assert last_token_index(right).tolist() == [1, 3, 0]
    assert last_token_index(both).tolist() == [2, 2]


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_finished_and_lengths():
    ro = Rollout(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long),
                 torch.tensor([[5, EOS, EOS], [5, 6, 7]]), torch.tensor([[1, 1, 0], [1, 1, 1]]),
                 torch.zeros(2, 3))
    assert ro.lengths.tolist() == [2, 3]
    assert ro.finished(EOS).tolist() == [True, False]
    assert ro.input_ids.shape == (2, 4) and ro.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def _rollout(policy, tokenizer, n=6, max_new_tokens=24, seed=0):
    prompts = ["What colour is a banana?", "Hello!", "List three fruits.", "Describe a tiger.",
               "Which is bigger, a mouse or a horse?", "Is a whale a fish?"][:n]
    g = torch.Generator().manual_seed(seed)
    return prompts, sample_completions(policy, tokenizer, prompts, max_new_tokens, 1.0, g)


def test_sampling_is_batched_left_padded_and_masked(policy, tokenizer):
    prompts, ro = _rollout(policy, tokenizer)
    B, P = ro.prompt_ids.shape
    assert B == len(prompts)
    assert (ro.prompt_mask[:, -1] == 1).all(), "left padding: every prompt ends at the last column"
    assert ro.prompt_mask[:, 0].sum() < B, "prompts of different lengths are padded on the left"
    eos = tokenizer.eos_token_id
    assert torch.equal(ro.completion_mask, completion_mask(ro.completion_ids, eos))
    after = ro.completion_mask == 0
    assert (ro.completion_ids[after] == tokenizer.pad_token_id).all()
    assert (ro.sampler_logprobs[after] == 0).all()


def test_sampling_is_reproducible(policy, tokenizer):
    _, a = _rollout(policy, tokenizer, seed=3)
    _, b = _rollout(policy, tokenizer, seed=3)
    _, c = _rollout(policy, tokenizer, seed=4)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_summed_logprob_equals_token_by_token(policy, tokenizer):
    """The one batched forward (left padding, masks, position ids) gives exactly the log-prob
    of each sampled token computed one token at a time on the unpadded sequence."""
    _, ro = _rollout(policy, tokenizer)
    batched = rollout_logprobs(policy, ro)
    with torch.no_grad():
        for i in range(ro.prompt_ids.shape[0]):
            prompt = ro.prompt_ids[i][ro.prompt_mask[i].bool()].tolist()
            comp = ro.completion_ids[i][: ro.lengths[i]].tolist()
            total = 0.0
            for t, tok in enumerate(comp):
                logits = policy(input_ids=torch.tensor([prompt + comp[:t]])).logits[0, -1]
                total += torch.log_softmax(logits, -1)[tok].item()
            assert abs(batched[i].sum().item() - total) < 1e-3, (i, batched[i].sum().item(), total)


def test_sampler_logprobs_are_on_policy_at_temperature_one(policy, tokenizer):
    _, ro = _rollout(policy, tokenizer)
    assert torch.allclose(ro.sampler_logprobs, rollout_logprobs(policy, ro), atol=1e-4)


def test_completion_logprobs_gradient_flows_only_through_masked_tokens(policy, tokenizer):
    _, ro = _rollout(policy, tokenizer, n=2)
    policy.requires_grad_(True)
    try:
        lp = completion_logprobs(policy, ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
        assert lp.requires_grad and (lp[ro.completion_mask == 0] == 0).all()
        lp.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    finally:
        policy.zero_grad(set_to_none=True)
        policy.requires_grad_(False)


def test_reward_read_at_end_of_turn_when_pad_equals_eos(tokenizer, tiny_dir):
    """With pad == eos, transformers' pooling (last id != pad) skips the end-of-turn token;
    reward_scores reads the hidden state at the last position the mask marks."""
    from b2b.models import load_reward_model

    torch.manual_seed(0)
    rm = load_reward_model(tiny_dir, num_labels=1)
    assert rm.config.pad_token_id == tokenizer.eos_token_id
    ids, mask = encode_prompts(tokenizer, ["What colour is a banana?", "Hello!"])
    comp = torch.tensor([[tokenizer.convert_tokens_to_ids("A"), EOS, EOS], [7, 8, EOS]])
    cmask = completion_mask(comp, EOS)
    full, fmask = torch.cat([ids, comp], 1), torch.cat([mask, cmask], 1)
    ours = reward_scores(rm, full, fmask)[:, 0]
    with torch.no_grad():
        hidden = rm.base_model(input_ids=full, attention_mask=fmask, position_ids=position_ids(fmask)).last_hidden_state
        at_eos = rm.score(hidden)[torch.arange(2), last_token_index(fmask)][:, 0]
        hf = rm(input_ids=full, attention_mask=fmask, position_ids=position_ids(fmask)).logits[:, 0]
    assert torch.allclose(ours, at_eos, atol=1e-5)
    assert last_token_index(fmask).tolist() == [ids.shape[1] + 1, ids.shape[1] + 2]
    assert not torch.allclose(ours, hf, atol=1e-4), "transformers' pooling reads another token"


def test_decode_drops_padding_and_special_tokens(policy, tokenizer):
    _, ro = _rollout(policy, tokenizer)
    texts = decode_completions(tokenizer, ro)
    assert len(texts) == ro.prompt_ids.shape[0]
    assert all("<|im_end|>" not in t for t in texts)


def test_repetition_penalty_sampler_logprobs_are_off_policy(policy, tokenizer):
    prompts = ["List three fruits.", "Hello!", "Which is bigger, a dog or a mouse?"]
    g = torch.Generator().manual_seed(0)
    ro = sample_completions(policy, tokenizer, prompts, 24, 1.0, g, repetition_penalty=1.5)
    with torch.no_grad():
        lp = rollout_logprobs(policy, ro)
    gap = ((ro.sampler_logprobs - lp).abs() * ro.completion_mask).sum() / ro.completion_mask.sum()
    assert gap > 1e-3                                    # the penalised sampler is not the policy
    g = torch.Generator().manual_seed(0)
    plain = sample_completions(policy, tokenizer, prompts, 24, 1.0, g, repetition_penalty=1.0)
    with torch.no_grad():
        lp = rollout_logprobs(policy, plain)
    assert torch.allclose(plain.sampler_logprobs, lp, atol=1e-4)


def test_entropy_matches_the_definition(policy, tokenizer):
    ro = sample_completions(policy, tokenizer, ["Hello!", "List two tools."], 8, 1.0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        logp, ent = rollout_logprobs(policy, ro, with_entropy=True)
        ids = ro.input_ids
        P = ro.prompt_ids.shape[1]
        logits = policy(input_ids=ids, attention_mask=ro.attention_mask,
                        position_ids=position_ids(ro.attention_mask)).logits[:, P - 1:-1].float()
        p = logits.softmax(-1)
        want = -(p * p.clamp_min(1e-30).log()).sum(-1) * ro.completion_mask
    assert torch.allclose(ent, want, atol=1e-4)
    assert torch.allclose(logp, rollout_logprobs(policy, ro))


def test_length_sorted_chunks_give_the_one_pass_logprobs_gradients_and_scores(policy, tokenizer, tiny_dir):
    from b2b.models import load_policy, load_reward_model
    from b2b.reward import rollout_reward_scores

    policy = load_policy(tiny_dir, trainable=True)
    prompts = ["Hi!", "List three fruits.", "What colour is a banana? Answer in one short sentence, please.",
               "Is a whale a fish?", "Describe a tiger.", "Which is bigger, a mouse or a horse?", "Hello", "Name a tool."]
    ro = sample_completions(policy, tokenizer, prompts * 2, 24, 1.0, torch.Generator().manual_seed(3))
    groups = ro.length_chunks(4)
    assert sorted(torch.cat(groups).tolist()) == list(range(16)) and len(groups) == 4
    lens = ro.prompt_mask.sum(1) + ro.completion_mask.sum(1)
    assert all(lens[a].max() <= lens[b].min() for a, b in zip(groups, groups[1:]))  # shortest first
    sub = ro.trimmed(groups[0])
    assert sub.prompt_ids.shape[1] < ro.prompt_ids.shape[1] or sub.completion_ids.shape[1] < ro.completion_ids.shape[1]
    assert torch.equal(sub.completion_mask.sum(1), ro.completion_mask[groups[0]].sum(1))  # no real token dropped
    one, one_h = rollout_logprobs(policy, ro, with_entropy=True, chunks=1)
    four, four_h = rollout_logprobs(policy, ro, with_entropy=True, chunks=4)
    assert four.shape == one.shape and torch.allclose(four, one, atol=1e-5) and torch.allclose(four_h, one_h, atol=1e-5)
    assert (four[ro.completion_mask == 0] == 0).all()
    w = torch.randn(one.shape, generator=torch.Generator().manual_seed(0))
    grads = []
    for n in (1, 4):
        policy.zero_grad()
        (rollout_logprobs(policy, ro, chunks=n) * w).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
    policy.zero_grad()
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-3)
    rm = load_reward_model(tiny_dir, num_labels=10)
    assert torch.allclose(rollout_reward_scores(rm, ro, chunks=4), rollout_reward_scores(rm, ro, chunks=1), atol=1e-5)


def test_sampling_with_finished_rows_dropped_stays_on_policy(tiny_dir, tokenizer, monkeypatch):
    import b2b.decoding as decoding
    from b2b.models import load_policy

    policy = load_policy(tiny_dir)
    prompts = ["Hi!", "List three fruits.", "Describe a tiger.", "Is a whale a fish?"] * 4
    for share in (0.0, 1.0):  # never / as soon as any row finishes
        monkeypatch.setattr(decoding, "COMPACT_AT", share)
        ro = sample_completions(policy, tokenizer, prompts, 32, 1.0, torch.Generator().manual_seed(0))
        lens = ro.completion_mask.sum(1)
        assert lens.min() < lens.max()  # rows finished at different times, so 1.0 did compact
        ref = rollout_logprobs(policy, ro, chunks=1)
        assert torch.allclose(ro.sampler_logprobs, ref, atol=1e-4)
        assert (ro.completion_ids[ro.completion_mask == 0] == tokenizer.pad_token_id).all()
