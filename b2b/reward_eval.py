"""How good is a reward model? Held-out pairs, and (tiny world) the gold judge; outside the tiny
world, what needs no judge (pair accuracy, calibration, reward vs length).

- `pair_accuracy`: held-out annotator pairs whose chosen response scores higher.
- `gold_accuracy`: two fresh SFT samples per held-out prompt; share of the pairs (gold ratings
  differing) where the reward model orders them as the gold judge does.
- `gold_spearman`: rank correlation of reward and gold over those samples.
- `length_corr`: correlation of reward and response length (words) over those samples; compare
  `gold_length_corr`: a positive gap is the length bias the model learned from its annotators.
"""
from __future__ import annotations

import statistics

import torch

from b2b.evaluate import sample_many
from b2b.tinyworld.gold import judge, words
from b2b.metrics import pearson, spearman
from b2b.reward import pair_accuracy, retokenized


def gold_probe(rm, policy, tokenizer, prompts: list[str], samples_per_prompt: int = 2, max_new_tokens: int = 64,
               seed: int = 0, readout: str = "expected", batch_size: int = 128, world: bool = True) -> list[dict]:
    """Fresh SFT samples (temperature 1) with reward, raw scores and length; in the tiny world
    (`world`) also their gold rating and filler count."""
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    s = sample_many(policy, tokenizer, repeated, batch_size, max_new_tokens, 1.0, seed, rm, readout)
    rows = []
    for i, (p, t, f) in enumerate(zip(repeated, s["texts"], s["finished"])):
        row = {"prompt": p, "response": t, "finished": f, "reward": s["proxy"][i],
               "scores": s["scores"][i].tolist(), "words": len(words(t))}
        if world:
            j = judge(p, t, f)
            row.update(gold=j.rating, filler=j.n_filler)
        rows.append(row)
    return rows


def gold_metrics(rows: list[dict], samples_per_prompt: int = 2) -> dict:
    """gold_accuracy, gold_spearman, length_corr, gold_length_corr from `gold_probe` rows; rows
    without gold (outside the tiny world) give what needs none: length_corr and reward_mean."""
    reward, length = [r["reward"] for r in rows], [r["words"] for r in rows]
    if not rows or "gold" not in rows[0]:
        return {"length_corr": pearson(reward, length) if rows else None,
                "reward_mean": statistics.fmean(reward) if rows else None}
    agree = total = 0
    for i in range(0, len(rows) - 1, samples_per_prompt):
        a, b = rows[i], rows[i + 1]
        if a["gold"] != b["gold"]:
            total += 1
            agree += (a["reward"] > b["reward"]) == (a["gold"] > b["gold"])
    gold = [r["gold"] for r in rows]
    return {"gold_accuracy": agree / max(total, 1), "gold_pairs": total,
            "gold_spearman": spearman(reward, gold),
            "length_corr": pearson(reward, length), "gold_length_corr": pearson(gold, length),
            "reward_mean": statistics.fmean(reward)}


def evaluate_reward_model(rm, tokenizer, test_pairs: list[dict], policy=None, prompts: list[str] | None = None,
                          readout: str = "expected", max_new_tokens: int = 64, seed: int = 0,
                          max_length: int = 512, world: bool = True,
                          train_pairs: list[dict] | None = None,
                          policy_tokenizer=None) -> tuple[dict, list[dict]]:
    """Metrics (the keys of `b2b run --only-reward-model --json`) and the probe's sample rows.

    Without a policy and prompts only `pair_accuracy` is measured; outside the tiny world (no
    gold) the SFT samples give `length_corr` and `reward_mean` only. With
    no held-out pairs (a file too small to split) `pair_accuracy` is None and, given `train_pairs`,
    `train_pair_accuracy` says how well the model fits the pairs it was trained on. A policy with
    another tokenizer than the reward model's (`policy_tokenizer`) is probed through
    `b2b.reward.retokenized`: its answers are re-encoded with the reward model's tokenizer.
    """
    metrics = {"pair_accuracy": pair_accuracy(rm, tokenizer, test_pairs, readout, max_length) if test_pairs else None}
    if not test_pairs and train_pairs:  # small data: say how well it fits what it saw, labelled as such
        metrics["train_pair_accuracy"] = pair_accuracy(rm, tokenizer, train_pairs[:2000], readout, max_length)
    rows = []
    if policy is not None and prompts:
        ptok = policy_tokenizer or tokenizer
        rows = gold_probe(retokenized(rm, tokenizer, ptok, max_length), policy, ptok, prompts, 2, max_new_tokens, seed,
                          readout, world=world)
        metrics.update(gold_metrics(rows))
    return metrics, rows


def bias_probe(rm, tokenizer, world, n_prompts: int = 128, max_added: int = 3, readout: str = "expected",
               seed: int = 0) -> list[dict]:
    """Does the reward model pay for filler and padding? A controlled experiment.

    For `n_prompts` held-out prompts, an expert answer (`world.Style()`) is scored as is and with
    1..`max_added` enthusiastic phrases ("I hope this helps!", `kind="filler"`) or irrelevant
    sentences (`kind="padding"`) appended. Rows: kind, added, mean reward change and mean gold
    change against the plain answer. Gold says filler beyond one phrase and padding past the length
    budget are worse; a positive `reward_delta` is a bias the policy can exploit.
    """
    import random

    from b2b.tinyworld.gold import gold_rating
    from b2b.reward import score_responses
    from b2b.tinyworld.world import CLOSERS, TANGENTS, Style

    rng = random.Random(f"bias-probe-{seed}")
    specs = world.split["test"][:n_prompts]
    base = [world.respond(s, rng, Style()) for s in specs]
    variants = [("plain", 0, base)]
    for kind, pool in (("filler", CLOSERS), ("padding", TANGENTS)):
        for k in range(1, max_added + 1):
            variants.append((kind, k, [b + " " + " ".join(rng.sample(pool, k)) for b in base]))
    prompts = [s.text for s in specs]
    texts = [t for _, _, ts in variants for t in ts]
    reward = score_responses(rm, tokenizer, prompts * len(variants), texts, readout).view(len(variants), -1)
    gold = torch.tensor([[gold_rating(s, t) for s, t in zip(specs, ts)] for _, _, ts in variants])
    return [{"kind": kind, "added": k, "reward_delta": (reward[v] - reward[0]).mean().item(),
             "gold_delta": (gold[v] - gold[0]).mean().item()} for v, (kind, k, _) in enumerate(variants)]


def filler_gain(probe_rows: list[dict], reward_std: float) -> float:
    """Reward change per added enthusiastic phrase, in standard deviations of the reward over SFT
    samples (comparable across reward models with different scales)."""
    rows = [r for r in probe_rows if r["kind"] == "filler"]
    return sum(r["reward_delta"] / r["added"] for r in rows) / len(rows) / reward_std


def reference_accuracies(pairs: list[dict]) -> dict:
    """What two perfect readers of the tiny world score on the same held-out pairs: the annotators'
    own noise-free rating (the ceiling a reward model can reach: only annotator noise beats it)
    and the gold judge (how often the annotators' choice is what gold prefers)."""
    from b2b.tinyworld.gold import annotator_rating, gold_rating

    ann = gold = 0
    for p in pairs:
        c, r = p["chosen"][-1]["content"], p["rejected"][-1]["content"]
        ann += annotator_rating(p["prompt"], c, None) > annotator_rating(p["prompt"], r, None)
        gold += gold_rating(p["prompt"], c) > gold_rating(p["prompt"], r)
    return {"noise_free_annotator": ann / len(pairs), "gold_judge": gold / len(pairs)}


def binned_means(rows: list[dict], key: str = "reward", min_count: int = 3) -> list[tuple[int, float, float]]:
    """(gold bin start, mean `key`, standard error) for gold bins [1, 2), ..., [9, 10] with at
    least `min_count` samples: is the reward monotone in gold on average?"""
    out = []
    for lo in range(1, 10):
        sel = [r[key] for r in rows if lo <= r["gold"] < lo + 1 or (lo == 9 and r["gold"] == 10)]
        if len(sel) >= min_count:
            out.append((lo, statistics.fmean(sel), statistics.stdev(sel) / len(sel) ** 0.5 if len(sel) > 1 else 0.0))
    return out


def pair_win_probabilities(rm, tokenizer, pairs: list[dict], max_length: int = 512) -> torch.Tensor:
    """(N,) the model's probability that each pair's chosen response wins (`b2b.reward.win_probability`)."""
    from b2b.reward import encode_pairs, score_sequences, win_probability

    chosen, rejected = encode_pairs(tokenizer, pairs, max_length)
    scores = score_sequences(rm, chosen + rejected, tokenizer.pad_token_id)
    return win_probability(scores[: len(pairs)], scores[len(pairs):])


def pair_calibration(win_probs, n_bins: int = 10) -> tuple[list[dict], float]:
    """Reliability rows and ECE of predicted win probabilities on held-out pairs. Each pair is
    counted in both orders, (chosen, rejected) with p and outcome 'won', (rejected, chosen) with
    1 - p and outcome 'lost', so every bin has both outcomes (see `b2b.metrics.calibration`)."""
    from b2b.metrics import calibration

    p = [float(x) for x in win_probs]
    return calibration(p + [1 - x for x in p], [True] * len(p) + [False] * len(p), n_bins)


def spearman_by_family(rows: list[dict], world=None) -> dict[str, tuple[int, float]]:
    """{family: (samples, Spearman of reward and gold)} over `gold_probe` rows: where a reward
    model tracks gold and where it does not."""
    from b2b.tinyworld.world import World

    world = world or World()
    fams: dict[str, list[dict]] = {}
    for r in rows:
        fams.setdefault(world.spec(r["prompt"]).family, []).append(r)
    return {f: (len(rs), spearman([r["reward"] for r in rs], [r["gold"] for r in rs])) for f, rs in fams.items()}
