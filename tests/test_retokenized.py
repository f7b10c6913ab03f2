"""A reward model scoring a policy with another tokenizer (`b2b.reward.Retokenized`), the guard that
refuses a reward model which cannot read the policy's ids, the SFT of a pretrained policy
(`b2b.sft`) and the policy and profile every run records. On the tiny models and a second
tokenizer made here; on SmolLM2's real weights: tests/test_real_model.py."""
import json

import pytest
import torch

from b2b.errors import ConfigError
from b2b.reward import Retokenized, reward_scores, retokenized, rollout_reward_scores
from b2b.rollout import Rollout, completion_mask, encode_prompts

PROMPTS = ["What colour is a banana?", "Count the legs of a spider.", "What colour is a banana?"]
ANSWERS = ["A banana is yellow.", "A spider has eight legs and it is a very interesting topic", "Blue."]
FINISHED = [True, False, True]


@pytest.fixture(scope="module")
def other_tokenizer(tiny_dir):
    """A second ChatML tokenizer with another vocabulary (a 400-token BPE): a policy's tokens that
    the tiny reward model cannot read."""
    from b2b.sft import demonstrations
    from b2b.tinyworld.tiny import build_tokenizer

    rows = demonstrations(tiny_dir.parent, limit=300)
    return build_tokenizer(["user", "assistant"] * 10 + [r["prompt"] + " " + r["completion"] for r in rows], 400)


@pytest.fixture(scope="module")
def rm(tiny_dir):
    from b2b.models import load_reward_model

    torch.manual_seed(0)
    return load_reward_model(tiny_dir, num_labels=1)


def _rollout(tok, prompts, answers, finished) -> Rollout:
    """A right-padded rollout of `answers` in `tok`'s ids, each followed by its end-of-turn token
    where `finished` (then padding with pad == eos)."""
    ids, mask = encode_prompts(tok, prompts)
    rows = [tok(a, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if f else [])
            for a, f in zip(answers, finished)]
    C = max(map(len, rows)) + 2
    comp = torch.full((len(rows), C), tok.eos_token_id)
    for i, r in enumerate(rows):
        comp[i, :len(r)] = torch.tensor(r)
    cmask = completion_mask(comp, tok.eos_token_id)
    for i, r in enumerate(rows):  # an unfinished answer: its mask ends at its last sampled token
        if not finished[i]:
            cmask[i, len(r):] = 0
    return Rollout(ids, mask, comp, cmask, torch.zeros(comp.shape))


def test_the_two_tokenizers_differ(tokenizer, other_tokenizer):
    text = ANSWERS[1]
    assert tokenizer(text)["input_ids"] != other_tokenizer(text)["input_ids"]
    assert len(other_tokenizer) < len(tokenizer)


def test_retokenized_reads_each_answer_at_the_reward_models_own_last_token(rm, tokenizer, other_tokenizer):
    """Each row, batched with padding on both sides, scores as the reward model scores that answer
    alone in its own ids: chat-formatted prompt + answer, + its end of turn only where the policy
    ended its turn."""
    ro = _rollout(other_tokenizer, PROMPTS, ANSWERS, FINISHED)
    wrapped = Retokenized(rm, tokenizer, other_tokenizer)
    got = rollout_reward_scores(wrapped, ro, prompts=PROMPTS)[:, 0]
    for i, (p, a, f) in enumerate(zip(PROMPTS, ANSWERS, FINISHED)):
        p_ids, _ = encode_prompts(tokenizer, [p])
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if f else [])
        ids = torch.cat([p_ids, torch.tensor([a_ids])], 1)
        with torch.no_grad():
            alone = reward_scores(rm, ids, torch.ones_like(ids))[0, 0]
        assert torch.allclose(got[i], alone, atol=1e-5), i
    # the end of turn matters: the finished row read without it scores otherwise
    ro_cut = _rollout(other_tokenizer, PROMPTS, ANSWERS, [False, False, False])
    cut = rollout_reward_scores(wrapped, ro_cut, prompts=PROMPTS)[:, 0]
    assert not torch.allclose(cut[0], got[0], atol=1e-4) and torch.allclose(cut[1], got[1], atol=1e-5)


def test_retokenized_follows_the_rollouts_rows_not_the_prompt_order(rm, tokenizer, other_tokenizer):
    ro = _rollout(other_tokenizer, PROMPTS, ANSWERS, FINISHED)
    wrapped = Retokenized(rm, tokenizer, other_tokenizer)
    full = rollout_reward_scores(wrapped, ro, prompts=PROMPTS)
    idx = torch.tensor([2, 0])
    part = rollout_reward_scores(wrapped, ro.select(idx), prompts=[PROMPTS[i] for i in idx.tolist()])
    assert torch.allclose(part, full[idx], atol=1e-5)
    with pytest.raises(TypeError, match="expected the rollout's prompts, one per row"):
        rollout_reward_scores(wrapped, ro)


def test_retokenized_only_when_the_tokenizers_differ(rm, tokenizer, other_tokenizer):
    assert retokenized(rm, tokenizer, tokenizer) is rm
    w = retokenized(rm, tokenizer, other_tokenizer)
    assert isinstance(w, Retokenized) and retokenized(w, tokenizer, other_tokenizer) is w
    from b2b.models import fingerprint

    assert fingerprint(w) == fingerprint(rm)  # a run keys on the reward model's own weights
    assert w.config is rm.config and sum(p.numel() for p in w.parameters()) == sum(p.numel() for p in rm.parameters())


@pytest.fixture(scope="module")
def other_policy(tmp_path_factory, other_tokenizer):
    """A small random Llama that writes `other_tokenizer`'s ids."""
    from b2b.tinyworld.tiny import TinyConfig, build_model

    d = tmp_path_factory.mktemp("other") / "other-policy"
    torch.manual_seed(0)
    build_model(other_tokenizer, TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2)).save_pretrained(d)
    other_tokenizer.save_pretrained(d)
    return d


def test_train_refuses_a_reward_model_that_cannot_read_the_policy(rm, tokenizer, other_policy, other_tokenizer):
    from b2b.models import load_policy
    from b2b.recipes import rl_config
    from b2b.config import get_profile
    from b2b.train import train

    policy = load_policy(other_policy, trainable=True)
    cfg = rl_config(get_profile("ci"), "reinforce", steps=1, batch_size=4, max_new_tokens=8, eval_every=0)
    with pytest.raises(ConfigError, match=r"^train: the reward model reads a vocabulary of [\d,]+ tokens, the policy "
                                          r"writes 400: score through .* b2b.reward.retokenized"):
        train(policy, other_tokenizer, rm, PROMPTS, cfg, progress=False)


def test_a_policy_with_another_tokenizer_trains_against_a_retokenized_reward_model(
        rm, tokenizer, other_policy, other_tokenizer, tmp_path):
    """Two steps of RLOO: rewards are the wrapped reward model's scores of the decoded answers, and
    the run's config.json names the policy and the profile it ran in."""
    from b2b.models import load_policy
    from b2b.recipes import rl_config
    from b2b.config import get_profile
    from b2b.train import train

    policy = load_policy(other_policy, trainable=True)
    cfg = rl_config(get_profile("ci"), "rloo", steps=2, batch_size=8, max_new_tokens=8, eval_every=2,
                    eval_prompts=4, checkpoint_every=2)
    h = train(policy, other_tokenizer, retokenized(rm, tokenizer, other_tokenizer), PROMPTS, cfg,
              eval_prompts=PROMPTS, out=tmp_path / "run", progress=False, profile="ci")
    assert [r["step"] for r in h.steps] == [1, 2] and all(torch.isfinite(torch.tensor(r["reward/proxy_mean"]))
                                                          for r in h.steps)
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["policy"] == "other-policy" and saved["profile"] == "ci" and saved["algo"] == "rloo"
    ck = json.loads((tmp_path / "run/checkpoints/step-000002/config.json").read_text())
    assert ck["policy"] == "other-policy"


def test_a_recorded_run_of_another_policy_is_not_read_back():
    from b2b.runs import same_config
    from dataclasses import asdict
    from b2b.rl_config import RLConfig

    want = {**asdict(RLConfig()), "policy": "smollm2-135m-tiny-sft", "profile": "tiny-smollm2"}
    assert same_config({**asdict(RLConfig()), "policy": "smollm2-135m-tiny-sft", "profile": "tiny"}, want)
    assert same_config(asdict(RLConfig()), want)  # a record that predates the identity keys
    assert not same_config({**asdict(RLConfig()), "policy": "tiny-sft", "profile": "tiny-smollm2"}, want)


def test_sft_learns_the_demonstrations_and_records_it(tiny_dir, tmp_path):
    """Two steps of `b2b.sft` on the tiny policy lower the loss on the batch it saw, and the saved
    folder loads as a policy with its record beside it."""
    from b2b.models import load_policy
    from b2b.sft import SFT_RECORD, SFTConfig, sft_policy

    out = sft_policy(tiny_dir, tmp_path / "sft", tiny_dir.parent, SFTConfig(steps=3, batch_size=4, lr=1e-3, warmup=0, limit=4),
                     progress=None)
    rec = json.loads((out / SFT_RECORD).read_text())
    assert rec["examples"] == 4 and len(rec["loss"]) == 3 and rec["loss"][-1] < rec["loss"][0]
    assert rec["base"] == "tiny-sft" and rec["config"]["lr"] == 1e-3
    assert load_policy(out).generation_config.do_sample is True


def test_sft_config_and_data_errors_are_one_line(tmp_path):
    from b2b.errors import DataError
    from b2b.sft import SFTConfig, demonstrations

    with pytest.raises(ConfigError, match="^sft config: field 'steps'"):
        SFTConfig(steps=0).validate()
    with pytest.raises(DataError, match=r"sft.jsonl: not found"):
        demonstrations(tmp_path)
    (tmp_path / "sft.jsonl").write_text('{"prompt": "Hi", "completion": "Hello."}\n{"prompt": "Hi"}\n')
    with pytest.raises(DataError, match=r"sft.jsonl: line 2: expected string fields 'prompt' and 'completion'"):
        demonstrations(tmp_path)


def test_trls_reward_function_rescores_another_tokenizers_completions_as_b2bs_loop(rm, tokenizer, other_tokenizer):
    """The reward function b2b hands TRL (`trl_bridge.reward_function`), given a Retokenized reward model
    and the policy's completion ids as TRL passes them (lists, cut after the end-of-turn token), gives
    b2b's loop's rewards for the same answers: decoded, re-encoded, read at the reward model's own end."""
    from b2b.reward import scalar_reward
    from b2b.tools.trl_bridge import reward_function

    wrapped = Retokenized(rm, tokenizer, other_tokenizer)
    ro = _rollout(other_tokenizer, PROMPTS, ANSWERS, FINISHED)
    want = scalar_reward(rollout_reward_scores(wrapped, ro, prompts=PROMPTS), "expected")
    ids = [other_tokenizer(a, add_special_tokens=False)["input_ids"] + ([other_tokenizer.eos_token_id] if f else [])
           for a, f in zip(ANSWERS, FINISHED)]
    got = reward_function(wrapped, other_tokenizer)(PROMPTS, ANSWERS, ids)
    assert torch.allclose(torch.tensor(got), want, atol=1e-5)
    cut = reward_function(wrapped, other_tokenizer)(PROMPTS, ANSWERS, [i[:-1] if f else i for i, f in zip(ids, FINISHED)])
    assert abs(cut[0] - got[0]) > 1e-4 and abs(cut[1] - got[1]) < 1e-5  # the end of turn is read where it was sampled
