"""The lean sampling forward (`b2b.decoding.LlamaDecoder`) computes what transformers' Llama computes."""
import pytest
import torch

import b2b.decoding as decoding
from b2b.decoding import LlamaDecoder
from b2b.rollout import encode_prompts, position_ids, sample_completions

PROMPTS = ["What colour is a banana?", "Hi!", "List three fruits and say which one is the sweetest.",
           "Is a whale a fish?", "Describe a tiger."]


def _small_llama(**overrides):
    """A random Llama with grouped-query attention (2 query heads per key/value head) and a
    scaled rope, unlike the tiny policy: a wrong head grouping or rope table fails here."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(vocab_size=1658, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
               rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0},
               tie_word_embeddings=False, eos_token_id=2, pad_token_id=2)
    cfg.update(overrides)
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**cfg)).eval()


def _check_against_the_model(model, tokenizer, atol):
    """Prefill, then 6 steps of random tokens with rows dropped on the way; every step's logits
    must equal the model's full forward over the same left-padded sequences."""
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    assert mask[:, 0].sum() < len(PROMPTS), "the prompts must be left-padded for this test"
    B, P = ids.shape
    new = torch.randint(3, 1600, (B, 6), generator=torch.Generator().manual_seed(0))
    full_ids, full_mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    with torch.no_grad():
        want = model(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids(full_mask)).logits
    dec = LlamaDecoder(model, ids, mask, max_new_tokens=6)
    assert torch.allclose(dec.prefill(), want[:, P - 1], atol=atol)
    rows = torch.arange(B)
    for t in range(6):
        if t == 2:  # drop rows 1 and 3 and reorder the rest, as sampling does when rows finish
            keep = torch.tensor([4, 0, 2])
            dec.keep(keep)
            rows = rows[keep]
        got = dec.step(new[rows, t])
        assert torch.allclose(got, want[rows, P + t], atol=atol), f"step {t}"


def test_lean_logits_equal_the_model_on_the_tiny_policy(policy, tokenizer):
    assert LlamaDecoder.supports(policy)
    _check_against_the_model(policy, tokenizer, atol=1e-4)


def test_lean_logits_equal_the_model_with_grouped_query_attention_and_scaled_rope(tokenizer):
    model = _small_llama()
    assert LlamaDecoder.supports(model)
    _check_against_the_model(model, tokenizer, atol=1e-4)


def test_lean_logits_in_bfloat16_match_the_model_to_bfloat16_precision(tokenizer):
    _check_against_the_model(_small_llama().to(torch.bfloat16), tokenizer, atol=0.1)


def test_models_it_does_not_compute_exactly_sample_through_their_own_forward(policy, tiny_dir):
    from peft import LoraConfig, get_peft_model

    from b2b.models import load_policy

    assert not LlamaDecoder.supports(_small_llama(attention_bias=True))
    assert not LlamaDecoder.supports(_small_llama(rope_parameters={"rope_type": "dynamic", "rope_theta": 500.0,
                                                                   "factor": 2.0}))
    lora = get_peft_model(load_policy(tiny_dir), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert not LlamaDecoder.supports(lora)
    assert not LlamaDecoder.supports(lora.base_model.model), "LoRA layers inside a Llama are not plain Linear"


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_lean_sampling_draws_the_same_tokens_as_the_model_forward(policy, tokenizer, monkeypatch, penalty):
    prompts = PROMPTS * 4
    runs = []
    for lean in (True, False):
        monkeypatch.setattr(decoding, "LEAN_DECODE", lean)
        runs.append(sample_completions(policy, tokenizer, prompts, 24, 1.0, torch.Generator().manual_seed(0),
                                       repetition_penalty=penalty))
    lean, model = runs
    lens = lean.completion_mask.sum(1)
    assert lens.min() < lens.max(), "rows must finish at different times for this test"
    assert torch.equal(lean.completion_ids, model.completion_ids)
    assert torch.allclose(lean.sampler_logprobs, model.sampler_logprobs, atol=1e-5)
