"""Supervised fine-tuning of any causal LM on the tiny world's demonstrations (`data/sft.jsonl`).

    out = sft_policy(smollm2_dir(), "~/.cache/b2b/smollm2-135m-tiny-sft", data_dir(), SFTConfig(steps=60))
    b2b sft --policy ~/.cache/b2b/smollm2-135m-instruct --out DIR --steps 60 --json

The tiny SFT policy is built from scratch by `b2b build-tiny` (`b2b.tinyworld.tiny`); this module
fine-tunes a pretrained model (SmolLM2-135M-Instruct for the `tiny-smollm2` profile) with the same
loss: next-token cross-entropy on the completion and its end-of-turn token, the chat-formatted
prompt masked out. The demonstrations are the tiny world's, flaws and all (annotators' favourite
filler, wrong facts, answers that ramble), so the fine-tuned policy learns the world's style and
its end of turn while keeping room to improve: RL then has something to gain, and something to hack.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from b2b.data import length_batches, warmup_cosine


def sft_examples(tokenizer, rows: list[dict]) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per row: chat-formatted prompt, then completion + <|im_end|>."""
    from b2b.rollout import chat_prompts

    p_ids = tokenizer(chat_prompts(tokenizer, [r["prompt"] for r in rows]), add_special_tokens=False)["input_ids"]
    c_ids = tokenizer([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + c + [eos], len(p)) for p, c in zip(p_ids, c_ids)]


def sft_batch(examples: list[tuple[list[int], int]], pad_id: int):
    """Right-padded ids, attention mask and labels (-100 on prompt and padding)."""
    T = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), T), pad_id)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    labels = torch.full((len(examples), T), -100)
    for i, (x, p) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
        labels[i, p:len(x)] = torch.tensor(x[p:])
    return ids, mask, labels


def train_sft(model, examples, cfg, log_every: int = 250, progress=print) -> list[float]:
    """Plain SFT: AdamW, linear warm-up then cosine decay; returns the loss per step. `cfg`: an
    `SFTConfig` or the tiny builder's `TinyConfig` (steps, batch_size, lr, warmup, seed)."""
    g = torch.Generator().manual_seed(cfg.seed)
    batches = length_batches([len(ids) for ids, _ in examples], cfg.batch_size, g)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = warmup_cosine(opt, cfg.warmup, cfg.steps)
    pad = model.config.pad_token_id
    losses, t0 = [], time.time()
    model.train()
    for step in range(cfg.steps):
        ids, mask, labels = sft_batch([examples[i] for i in next(batches)], pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress and (step + 1) % log_every == 0:
            progress(f"step {step + 1}/{cfg.steps}  loss {sum(losses[-log_every:]) / log_every:.3f}  {time.time() - t0:.0f}s")
    model.eval()
    return losses


SFT_RECORD = "b2b_sft.json"
"""Beside a fine-tuned policy: `{"config": SFTConfig as a dict, "base": the model it started from,
"examples": n, "loss": [per step], "seconds": s, "before": {...}, "after": {...}}` (before and
after: `b2b.evaluate.evaluate_policy`'s metrics on held-out prompts, when measured)."""


@dataclass(frozen=True)
class SFTConfig:
    """How a pretrained policy is fine-tuned on the tiny world's demonstrations."""

    steps: int = 60
    """Optimizer steps (each a batch of `batch_size` demonstrations, drawn in length groups)."""
    batch_size: int = 16
    lr: float = 5e-5
    """AdamW's peak learning rate (linear warm-up, then cosine decay to zero)."""
    warmup: int = 5
    seed: int = 0
    limit: int | None = None
    """Use only the first `limit` demonstrations (None: all 20,000)."""

    def validate(self) -> "SFTConfig":
        """The config itself, or a one-line `ConfigError` naming the first bad field."""
        from b2b.guards import check_fields

        return check_fields(self, "sft config: field '", positive=("steps", "batch_size", "lr"),
                            non_negative=("warmup", "seed"), whole=("steps", "batch_size", "warmup", "seed"))


def demonstrations(data_dir: str | Path, limit: int | None = None) -> list[dict]:
    """The tiny world's SFT rows `{"prompt", "completion"}` from `data_dir/sft.jsonl`."""
    from b2b.errors import DataError

    path = Path(data_dir) / "sft.jsonl"
    if not path.exists():
        raise DataError(f"{path}: not found; expected the tiny world's demonstrations (b2b build-data writes them)")
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
                raise DataError(f"{path}: line {i}: expected string fields 'prompt' and 'completion'")
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    return rows


def finetune(policy, tokenizer, rows: list[dict], cfg: SFTConfig = SFTConfig(), progress=print) -> list[float]:
    """Fine-tune `policy` in place on `rows` (`{"prompt", "completion"}`); returns the loss per step.

    Each example is the chat-formatted prompt, then completion + end of turn; the loss is the mean
    next-token cross-entropy over the completion's tokens (labels -100 on prompt and padding):

        L = - (1 / sum_i |y_i|) sum_i sum_t log pi(y_i,t | x_i, y_i,<t)
    """
    cfg = cfg.validate()
    torch.manual_seed(cfg.seed)
    return train_sft(policy, sft_examples(tokenizer, rows), cfg, log_every=max(1, cfg.steps // 6),
                     progress=progress or (lambda _: None))


def sft_policy(base: str | Path, out: str | Path, data_dir: str | Path, cfg: SFTConfig = SFTConfig(),
               eval_prompts: int = 0, max_new_tokens: int = 48, progress=print) -> Path:
    """Fine-tune the policy at `base` on `data_dir/sft.jsonl` (`b2b.config.data_dir()`: the shipped
    data) and save it
    (safetensors, with its tokenizer and a sampling `generation_config`) to `out`, with
    `SFT_RECORD` beside it. With `eval_prompts`, the policy is measured on that many held-out
    prompts before and after (gold at temperature 1, end-of-turn rate, distinct-2, length)."""
    from transformers import GenerationConfig

    from b2b.models import default_device, load_policy, load_tokenizer

    progress = progress or (lambda _: None)
    cfg = cfg.validate()
    data = Path(data_dir)
    rows = demonstrations(data, cfg.limit)
    tok = load_tokenizer(base)
    policy = load_policy(base, default_device(), dtype=torch.float32, trainable=True)
    record = {"config": dataclasses.asdict(cfg), "base": Path(str(base)).name, "examples": len(rows)}
    if eval_prompts:
        record["before"] = measure(policy, tok, data, eval_prompts, max_new_tokens)
        progress(f"before: {_line(record['before'])}")
    t0 = time.time()
    record["loss"] = [round(x, 4) for x in finetune(policy, tok, rows, cfg, progress)]
    record["seconds"] = round(time.time() - t0, 1)
    progress(f"fine-tuned: {cfg.steps} steps of {cfg.batch_size} in {record['seconds']:.0f} s")
    if eval_prompts:
        record["after"] = measure(policy, tok, data, eval_prompts, max_new_tokens)
        progress(f"after:  {_line(record['after'])}")
    policy.generation_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / SFT_RECORD).write_text(json.dumps(record) + "\n")
    return out


SFT_METRICS = ("gold_mean", "eos_rate", "distinct_2", "mean_length")


def measure(policy, tokenizer, data_dir: str | Path, n: int, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """A policy's held-out metrics as the tiny SFT policy's are measured: one answer per prompt at
    temperature 1 on the first `n` held-out prompts; gold, end-of-turn rate, distinct-2, mean length."""
    from b2b.data import load_prompts
    from b2b.evaluate import evaluate_policy

    prompts = load_prompts(str(data_dir), "test", limit=n)
    was_training = policy.training
    res = evaluate_policy(policy, tokenizer, prompts, world=True, batch_size=64, max_new_tokens=max_new_tokens,
                          seed=seed)
    policy.train(was_training)
    return {**{k: round(res[k], 4) for k in SFT_METRICS}, "n": n, "max_new_tokens": max_new_tokens,
            "samples": res["samples"][:8]}


def _line(m: dict) -> str:
    return (f"gold {m['gold_mean']:.2f}, end of turn {m['eos_rate']:.0%}, distinct-2 {m['distinct_2']:.2f}, "
            f"length {m['mean_length']:.1f} tokens ({m['n']} held-out prompts)")
