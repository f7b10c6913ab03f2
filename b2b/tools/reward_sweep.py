"""The tiny profile's Level 1 reward-model recipe against time: train it at several settings and
report, for each, held-out pair accuracy, agreement with gold and seconds
(docs/performance.md, the reward model's step).

    python -m b2b.tools.reward_sweep --json sweep.jsonl                 # the default grid
    python -m b2b.tools.reward_sweep --set epochs=1,batch_size=64,lr=1e-3 --set epochs=2
    python -m b2b.tools.reward_sweep --set epochs=0.3,freeze=2 --set epochs=0.3

Each setting is one `b2b.reward_models.reward_stage` (the same code as `b2b run`'s reward stage),
its metrics appended as one JSON line; nothing is saved over the shipped `data/rm-level1`. Two keys
are the sweep's own, not `RewardConfig` fields: `freeze=N` trains with the embeddings and the
backbone's lowest N layers frozen (no backward pass through them), `precision=bf16` under CPU
autocast (`b2b.precision`; the default is fp32 on a CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time

GRID = ({"epochs": 1.0, "batch_size": 64, "lr": 1e-3},
        {"epochs": 1.0, "batch_size": 32, "lr": 5e-4},
        {"epochs": 0.6, "batch_size": 64, "lr": 1e-3})
"""Shorter schedules than the shipped model's (2 passes of 32 pairs at lr 5e-4)."""


def parse(text: str) -> dict:
    out = {}
    for part in text.split(","):
        k, v = (x.strip() for x in part.split("="))
        out[k] = v if k == "precision" else float(v) if k in ("epochs", "lr", "weight_decay") else int(v)
    return out


@contextlib.contextmanager
def variant(freeze: int = 0, precision: str = "auto"):
    """`b2b run`'s reward stage with the embeddings and the lowest `freeze` layers frozen, and its
    forward and backward passes at `precision`: `b2b.reward.train_reward_model` (which
    `train_from_backbone` calls on the fresh model) wrapped for the duration only."""
    from b2b import reward

    plain = reward.train_reward_model

    def train(rm, *args, **kwargs):
        rm.model.embed_tokens.requires_grad_(not freeze)
        for layer in rm.model.layers[:freeze]:
            layer.requires_grad_(False)
        return plain(rm, *args, **{**kwargs, "precision": precision})

    if freeze or precision != "auto":
        reward.train_reward_model = train
    try:
        yield
    finally:
        reward.train_reward_model = plain


def sweep(settings, profile_name: str = "tiny", say=print):
    from b2b.config import get_profile
    from b2b.recipes import reward_config
    from b2b.reward_models import reward_stage

    profile = get_profile(profile_name)
    for s in settings:
        own = {k: v for k, v in s.items() if k in ("freeze", "precision")}
        cfg = reward_config(profile, 1, eval_every=10**9, **{k: v for k, v in s.items() if k not in own})
        t0 = time.time()
        with variant(**own):
            _, _, metrics, history, _ = reward_stage(profile, 1, cfg=cfg, progress=False)
        row = {"settings": s, "steps": len(history), "seconds": round(time.time() - t0, 1),
               "train_seconds": metrics["train_seconds"], "step_s": round(metrics["train_seconds"] / len(history), 4),
               **{k: metrics[k] for k in ("pair_accuracy", "gold_accuracy", "gold_spearman")}}
        say(json.dumps(row))
        yield row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", help="settings of one run, e.g. epochs=1,batch_size=64,lr=1e-3")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--json", help="append each run's metrics to this file as one JSON line")
    a = ap.parse_args(argv)
    for row in sweep([parse(s) for s in a.set] if a.set else GRID, a.profile):
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
