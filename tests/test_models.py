import shutil

import pytest
import torch

from b2b.config import data_dir, get_profile, pick_dtype, resolve_profile_name
from b2b.errors import ConfigError, ModelError
from b2b.models import (fix_tokenizer, load_policy, load_reward_model, load_tokenizer,
                        resolve_model_source)

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_tiny_policy_loads_with_plain_transformers(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert (tiny_dir / "model.safetensors").exists()
    assert not list(tiny_dir.glob("*.bin"))
    text = tok.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id  # like SmolLM2
    assert model.config.model_type == "llama"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6


def test_load_tokenizer_fixes_padding(tokenizer):
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None


def test_fix_tokenizer_adds_pad_and_requires_template(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.pad_token = None
    tok.padding_side = "right"
    fixed = fix_tokenizer(tok)
    assert fixed.pad_token_id == fixed.eos_token_id and fixed.padding_side == "left"
    tok.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        fix_tokenizer(tok, "mytok")


def test_policy_and_reference_modes(tiny_dir):
    ref = load_policy(tiny_dir)
    pol = load_policy(tiny_dir, trainable=True)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    assert pol.training and all(p.requires_grad for p in pol.parameters())


@pytest.mark.parametrize("num_labels", [1, 10])
def test_reward_model_from_backbone(tiny_dir, num_labels):
    rm = load_reward_model(tiny_dir, num_labels=num_labels)
    assert rm.score.out_features == num_labels
    assert rm.config.pad_token_id is not None


def test_model_path_errors(tmp_path, tiny_dir):
    with pytest.raises(ModelError, match="model directory not found"):
        resolve_model_source(tmp_path / "missing")
    with pytest.raises(ModelError, match="model directory not found"):
        resolve_model_source("data/no-such-model")  # looks like org/name, but data/ is local
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_source(tmp_path)
    assert resolve_model_source(SMOL) == SMOL  # a hub id passes through
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot load model weights"):
        load_policy(broken)
    for f in broken.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(ModelError, match="cannot load a tokenizer"):
        load_tokenizer(broken)


def test_colab_hub_ids_use_the_same_loaders_with_local_stand_ins(monkeypatch, tiny_dir):
    """The colab profile passes hub ids to from_pretrained; here a local copy stands in."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    seen = []
    for cls in (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer):
        real = cls.from_pretrained.__func__

        def fake(klass, name, *a, _real=real, **kw):
            seen.append((klass.__name__, name, kw.get("use_safetensors"), kw.get("trust_remote_code")))
            return _real(klass, tiny_dir if name == SMOL else name, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(fake))
    profile = get_profile("colab")
    assert profile.policy == SMOL and not profile.world
    tok = load_tokenizer(profile.policy)
    pol = load_policy(profile.policy)
    rm = load_reward_model(profile.reward_backbone, num_labels=10)
    assert tok.padding_side == "left" and pol.config.model_type == "llama" and rm.score.out_features == 10
    assert [s[:2] for s in seen] == [("AutoTokenizer", SMOL), ("AutoModelForCausalLM", SMOL),
                                      ("AutoModelForSequenceClassification", SMOL)]
    assert all(s[3] is None for s in seen), "never trust_remote_code"
    assert seen[1][2] is True, "safetensors only"


def test_profile_resolution_order(monkeypatch):
    monkeypatch.delenv("B2B_PROFILE", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile_name() == "tiny"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile_name() == "colab"
    monkeypatch.setenv("CI", "true")
    assert resolve_profile_name() == "ci"
    monkeypatch.setenv("B2B_PROFILE", "tiny")
    assert resolve_profile_name() == "tiny"
    assert resolve_profile_name("colab") == "colab"
    monkeypatch.setenv("CI", "false")
    monkeypatch.delenv("B2B_PROFILE")
    assert resolve_profile_name() == "colab"
    with pytest.raises(ConfigError, match="profile: expected one of ci, tiny, colab, got 'big'"):
        resolve_profile_name("big")


def test_profiles_share_a_code_path():
    ci, tiny = get_profile("ci"), get_profile("tiny")
    assert ci.policy == tiny.policy == str(data_dir() / "tiny-sft")
    assert ci.scale < tiny.scale and ci.eval_prompts < tiny.eval_prompts
    assert get_profile("colab").preferences_split == "average_rating"


def test_pick_dtype_by_compute_capability():
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cuda", (7, 5)) == torch.float16   # T4
    assert pick_dtype("cuda", (8, 0)) == torch.bfloat16  # A100
    assert pick_dtype("cuda:0", (9, 0)) == torch.bfloat16


def test_a_saved_reward_model_loads_with_its_own_head(tiny_dir, tmp_path):
    from b2b.models import load_reward_model, load_tokenizer
    from b2b.reward import save_reward_model

    save_reward_model(load_reward_model(tiny_dir, num_labels=10), load_tokenizer(tiny_dir), tmp_path / "rm2", half=True)
    rm = load_reward_model(tmp_path / "rm2")
    assert rm.config.num_labels == 10 and rm.score.weight.dtype == torch.float32  # fp16 on disk, fp32 in memory
    assert load_reward_model(tiny_dir).config.num_labels == 1  # a plain backbone: a fresh scalar head
