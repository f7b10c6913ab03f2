import torch

from b2b.tinyworld.tiny import CHAT_TEMPLATE, TinyConfig, build_model, build_tokenizer, sft_batch, sft_examples, train_sft

ROWS = [{"prompt": "What colour is a banana?", "completion": "A banana is yellow."},
        {"prompt": "Hello!", "completion": "Hello! How can I help you today?"}] * 8


def test_tokenizer_is_deterministic_and_round_trips():
    texts = [r["prompt"] for r in ROWS] + [r["completion"] for r in ROWS] + ["user", "assistant"] * 5
    a, b = build_tokenizer(texts, 300), build_tokenizer(texts, 300)
    assert a.get_vocab() == b.get_vocab()
    s = "A banana is yellow!\n1. Apple"
    assert a.decode(a(s)["input_ids"]) == s
    assert a.chat_template == CHAT_TEMPLATE and a.pad_token_id == a.eos_token_id


def test_sft_labels_cover_only_the_completion_and_end_of_turn():
    tok = build_tokenizer([r["prompt"] + " " + r["completion"] for r in ROWS] + ["user", "assistant"], 300)
    ex = sft_examples(tok, ROWS[:2])
    ids, mask, labels = sft_batch(ex, tok.pad_token_id)
    for i, (x, p) in enumerate(ex):
        assert (labels[i, :p] == -100).all()
        assert labels[i, len(x) - 1] == tok.eos_token_id
        assert tok.decode(labels[i, p:len(x) - 1]) == ROWS[i]["completion"]
        assert (labels[i, len(x):] == -100).all() and (mask[i, len(x):] == 0).all()


def test_a_short_sft_run_lowers_the_loss_and_saves_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = build_tokenizer([r["prompt"] + " " + r["completion"] for r in ROWS] + ["user", "assistant"], 300)
    cfg = TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, steps=40,
                     batch_size=8, lr=1e-2, warmup=5)
    model = build_model(tok, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    losses = train_sft(model, sft_examples(tok, ROWS), cfg, progress=None)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == CHAT_TEMPLATE
    ids = torch.tensor([tok("A banana")["input_ids"]])
    assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-5)


def test_build_tiny_is_deterministic(tmp_path, data_dir):
    from safetensors.torch import load_file

    from b2b.tinyworld.tiny import build_tiny

    cfg = TinyConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, steps=5, batch_size=8)
    a = build_tiny(data_dir, tmp_path / "a", cfg, progress=None)
    b = build_tiny(data_dir, tmp_path / "b", cfg, progress=None)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert (a / "tokenizer.json").read_text() == (data_dir / "tiny-sft" / "tokenizer.json").read_text()
