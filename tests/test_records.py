"""Shipped run records (data/runs/): a fresh clone reads a finished run back from its record,
and only when the settings and the reward model are that run's."""
import copy
import dataclasses
import json

import pytest
import torch

from b2b import runs
from b2b.tools.records import finished_steps, pack, pack_run
from b2b.rl_config import RLConfig
from b2b.train import train

PROMPTS = ["List three fruits.", "What colour is a banana?", "Is a whale a fish?", "Hello!"]
CFG = RLConfig(steps=3, batch_size=4, max_new_tokens=12, eval_every=2, sample_every=1, n_samples=2, checkpoint_every=3)


@pytest.fixture(scope="module")
def rm(data_dir):
    from b2b.models import load_reward_model
    return load_reward_model(data_dir / "rm-level1")


def _policy(tiny_dir):
    from b2b.models import load_policy
    return load_policy(tiny_dir, trainable=True)


@pytest.fixture()
def records(tmp_path, monkeypatch):
    """A data directory of its own for the records (the repository's data/ is not written)."""
    import b2b.config

    data = tmp_path / "data"
    monkeypatch.setattr(b2b.config, "data_dir", lambda: data)
    return data / "runs"


@pytest.fixture()
def trained(tiny_dir, tokenizer, rm, tmp_path):
    out = tmp_path / "lab" / "runs" / "exp" / "r1"
    policy = _policy(tiny_dir)
    h = train(policy, tokenizer, rm, PROMPTS, CFG, eval_prompts=PROMPTS, out=out, progress=False)
    return out, h, policy


def _spy_steps(monkeypatch):
    import importlib

    T = importlib.import_module("b2b.train")  # the module (b2b.train is also the function)
    calls = []
    real = T.rl_step
    monkeypatch.setattr(T, "rl_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_record_key_is_the_path_below_the_last_runs_folder(tmp_path):
    assert runs.record_key(tmp_path / "runs" / "showdown-tiny" / "rloo-seed0") == "showdown-tiny/rloo-seed0"
    assert runs.record_key(tmp_path / "runs" / "a" / "runs" / "b") == "b"
    assert runs.record_key(tmp_path / "elsewhere" / "b") is None
    assert runs.record_key(tmp_path / "runs") is None


def test_a_fresh_clone_reads_the_run_back_from_its_record(trained, records, tiny_dir, tokenizer, rm, tmp_path,
                                                          monkeypatch):
    out, h, policy = trained
    rec = pack_run(out, weights=True)
    assert rec == records / "exp" / "r1"
    assert {p.name for p in rec.iterdir()} == {"config.json", "reward_model.json", "metrics.jsonl.gz", "evals.jsonl.gz",
                                               "samples.jsonl.gz", "checkpoints"}
    weights = rec / "checkpoints" / "step-000003" / "policy.safetensors"
    assert not (weights.parent / "trainer.pt").exists()            # nothing to resume from: read back only
    from safetensors.torch import load_file
    assert all(t.dtype == torch.float16 for t in load_file(str(weights)).values())

    calls = _spy_steps(monkeypatch)
    fresh_dir = tmp_path / "clone" / "runs" / "exp" / "r1"          # the same key in another checkout
    fresh = _policy(tiny_dir)
    back = train(fresh, tokenizer, rm, PROMPTS, CFG, eval_prompts=PROMPTS, out=fresh_dir, reuse=True, progress=False)
    assert calls == []                                             # not one step trained
    assert back.steps == h.steps and back.evals == h.evals and back.samples == h.samples
    for a, b in zip(fresh.parameters(), policy.parameters()):     # the final weights, through fp16
        assert torch.allclose(a, b, atol=2e-3, rtol=1e-2)
    shorter = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, dataclasses.replace(CFG, steps=2), eval_prompts=PROMPTS,
                    out=fresh_dir, reuse=True, progress=False)
    assert calls == [] and shorter.steps == h.steps[:2]            # its first steps: read back as well


def test_a_record_is_read_back_only_for_its_own_settings_and_reward_model(trained, records, tiny_dir, tokenizer, rm,
                                                                          tmp_path, monkeypatch):
    out, h, _ = trained
    pack_run(out)
    calls = _spy_steps(monkeypatch)
    other = dataclasses.replace(CFG, kl_coef=0.1)
    d1 = tmp_path / "c1" / "runs" / "exp" / "r1"
    h1 = train(_policy(tiny_dir), tokenizer, rm, PROMPTS, other, eval_prompts=PROMPTS, out=d1, reuse=True, progress=False)
    assert len(calls) == 3 and json.loads((d1 / "config.json").read_text())["kl_coef"] == 0.1  # trained afresh
    assert h1.steps != h.steps
    calls.clear()
    d2 = tmp_path / "c2" / "runs" / "exp" / "r1"
    rm2 = copy.deepcopy(rm)
    with torch.no_grad():
        rm2.score.weight.add_(0.5)                                 # another reward model
    train(_policy(tiny_dir), tokenizer, rm2, PROMPTS, CFG, eval_prompts=PROMPTS, out=d2, reuse=True, progress=False)
    assert len(calls) == 3
    calls.clear()
    longer = dataclasses.replace(CFG, steps=5)                     # a record cannot be continued: trained from 0
    d3 = tmp_path / "c3" / "runs" / "exp" / "r1"
    train(_policy(tiny_dir), tokenizer, rm, PROMPTS, longer, eval_prompts=PROMPTS, out=d3, reuse=True, progress=False)
    assert len(calls) == 5


def test_incomplete_logs_are_not_a_finished_run(trained, records, tiny_dir, tokenizer, rm, tmp_path, monkeypatch):
    out, h, _ = trained
    rows = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
    (out / "metrics.jsonl").write_text("".join(rows[:2]))
    assert finished_steps(out) is None
    with pytest.raises(ValueError, match="not a finished run"):
        pack_run(out)
    import shutil
    shutil.rmtree(out / "checkpoints")                             # logs of 2 of 3 steps, no checkpoint
    assert runs.finished_in_logs(out, CFG, runs.recorded_reward_fingerprint(out)) is None
    calls = _spy_steps(monkeypatch)
    train(_policy(tiny_dir), tokenizer, rm, PROMPTS, CFG, eval_prompts=PROMPTS, out=out, reuse=True, progress=False)
    assert len(calls) == 3


def test_a_folder_of_runs_packs_each_run_and_restores_one_level_at_a_time(trained, records, tmp_path):
    out, _, _ = trained
    (out.parent / "sft_pooled.json").write_text('{"key": 1}')
    (out.parent / "unfinished").mkdir()
    written = pack([out.parent])
    assert written == [records / "exp" / "r1"] and (records / "exp" / "sft_pooled.json").exists()
    fresh = tmp_path / "clone" / "runs" / "exp"
    assert runs.restore_record(fresh)
    assert sorted(p.name for p in fresh.iterdir()) == ["sft_pooled.json"]   # not the runs inside it
    assert runs.restore_record(fresh / "r1") and (fresh / "r1" / "metrics.jsonl").read_text() == \
        (out / "metrics.jsonl").read_text()
    assert not runs.restore_record(fresh / "r1")                  # holds a run now: left alone
    assert not runs.restore_record(tmp_path / "runs" / "no-such-record")


def test_shipped_records_are_runs_of_the_shipped_reward_model_and_of_todays_settings(data_dir):
    """A record is read back only under its own settings and reward model: one that drifted from
    them (a retrained reward model, a changed recipe) would silently be trained again instead."""
    import gzip

    from b2b.config import get_profile
    from b2b.models import fingerprint, load_reward_model
    from b2b.tools.showdown import METHODS, _slug, method_config

    from b2b.tools import overopt

    fp = fingerprint(load_reward_model(data_dir / "rm-level1"))
    configs = sorted((data_dir / "runs").rglob("config.json"))
    assert configs, "no shipped run records"
    cells = {f"{_slug(m)}-seed{s}": (m, s) for m in METHODS for s in (0, 1, 2)}
    for cfg_file in configs:
        d = cfg_file.parent
        recorded = json.loads((d / "reward_model.json").read_text())["fingerprint"]
        if d.parent.name == overopt.SHIPPED:  # the over-optimisation lab's RL runs: against its own reward models
            ens = json.loads((d.parent / f"ensemble-rm-{overopt.ENSEMBLE_PAIRS}.json").read_text())
            key = d.name.split("-")[1]  # rl-<single|worst|...>-<pairs>
            want_fp = ens["members"][0]["fingerprint"] if key == "single" else ens["ensemble_fingerprints"][key]
            assert recorded == want_fp, d
            cfg = RLConfig(**{k: v for k, v in json.loads(cfg_file.read_text()).items() if k not in runs.IDENTITY})
            method = overopt.RL_METHODS["-kl" if d.name.endswith("-kl") else ""]
            assert cfg == method_config(get_profile("tiny"), method, 0, overopt.RL_STEPS), d
        else:
            assert recorded == fp, d
        saved = json.loads(cfg_file.read_text())
        cfg = RLConfig(**{k: v for k, v in saved.items() if k not in runs.IDENTITY}).validate()
        steps = [json.loads(line)["step"] for line in gzip.decompress((d / "metrics.jsonl.gz").read_bytes()).splitlines()]
        assert steps == list(range(1, cfg.steps + 1)), d
        # every record names the policy and profile it ran in: the tiny policy's, or the real model's
        want = ({"policy": "smollm2-135m-tiny-sft", "profile": "tiny-smollm2"} if d.parent.name == "smollm2-tiny"
                else {"policy": "tiny-sft", "profile": "tiny"})
        assert {k: saved.get(k) for k in ("policy", "profile")} == want, d
        assert saved.get("precision") in (None, "fp32"), d  # trained on a CPU (None: before it was recorded)
        if d.parent.name == "showdown-tiny":
            method, seed = cells[d.name]
            assert cfg == method_config(get_profile("tiny"), method, seed), d
        if d.parent.name == "smollm2-tiny":
            from b2b.tools.smollm2_world import configs

            want = configs()[d.name]  # what a run keeps on disk is not its settings (runs.STORAGE)
            assert dataclasses.replace(cfg, **{k: getattr(want, k) for k in runs.STORAGE}) == want, d


def test_a_cached_result_is_packed_restored_and_read_back_only_for_its_key(records, tmp_path):
    """What a notebook measures besides a run (a TRL cross-check, the LoRA demonstration) is
    shipped the same way: computed once, packed, read back by a fresh clone for the same key."""
    calls = []
    compute = lambda: calls.append(1) or {"accuracy": 0.5 + len(calls) / 10}  # noqa: E731
    out = tmp_path / "lab" / "runs" / "nb01-tiny-trl-check"
    key = {"steps": 3, "limit": (1, 2)}
    assert runs.cached_result(out, key, compute) == {"accuracy": 0.6}
    assert runs.cached_result(out, key, compute) == {"accuracy": 0.6} and len(calls) == 1
    assert pack([out]) == [records / "nb01-tiny-trl-check"]
    fresh = tmp_path / "clone" / "runs" / "nb01-tiny-trl-check"
    assert runs.cached_result(fresh, key, compute) == {"accuracy": 0.6} and len(calls) == 1   # from the record
    assert runs.cached_result(fresh, key, compute, retrain=True) == {"accuracy": 0.7}        # asked to: computed
    assert runs.cached_result(fresh, {"steps": 4}, compute) == {"accuracy": 0.8}            # another key: computed
    assert json.loads((fresh / "result.json").read_text())["key"] == {"steps": 4}
    (tmp_path / "lab" / "runs" / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a finished run, a cached result"):
        pack([tmp_path / "lab" / "runs" / "empty"])


def test_quick_variants_fit_five_minutes_by_the_shipped_records_step_times(data_dir):
    """`recipes.quick` sizes a notebook's run to about five minutes from a table of step times; the
    table must be no faster than what the shipped tiny runs measured (median of their medians)."""
    import gzip
    import statistics

    from b2b.config import get_profile
    from b2b.algorithms import ALGORITHMS, get
    from b2b.recipes import QUICK_EVAL_S, clip_demo, quick, rl_config

    def updates(cfg, algo):  # optimizer steps per batch over those of the algorithm's recipe
        a = get(algo)
        if not a.clipped:
            return 1.0
        return cfg["ppo_epochs"] * cfg["minibatches"] / (a.settings["ppo_epochs"] * a.settings["minibatches"])

    measured = {}
    for cfg_file in (data_dir / "runs").rglob("config.json"):
        cfg = json.loads(cfg_file.read_text())
        rows = [json.loads(line) for line in gzip.decompress((cfg_file.parent / "metrics.jsonl.gz").read_bytes()).splitlines()]
        measured.setdefault(cfg["algo"], []).append(statistics.median(r["time/step_s"] for r in rows)
                                                     / updates(cfg, cfg["algo"]))
    assert set(measured) == set(ALGORITHMS)                     # every algorithm has shipped runs to check against
    for algo, xs in measured.items():
        assert statistics.median(xs) <= get(algo).quick_step_s, (algo, xs)
    tiny = get_profile("tiny")
    cfgs = [rl_config(tiny, a) for a in ALGORITHMS]
    cfgs += [dataclasses.replace(cfgs[0], steps=600), *clip_demo(tiny).values()]
    for cfg in cfgs:
        q = quick(cfg)
        step_s = get(cfg.algo).quick_step_s * updates(dataclasses.asdict(cfg), cfg.algo)
        assert 4 <= q.steps <= cfg.steps and q.steps * step_s + (q.steps // q.eval_every + 1) * QUICK_EVAL_S <= 300
        assert dataclasses.replace(q, steps=cfg.steps, eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every) == cfg
    assert quick(cfgs[-1]).steps < quick(cfgs[3]).steps        # 16 updates per batch: fewer steps in the budget


def test_the_readme_and_results_showdown_sections_are_the_shipped_records(tmp_path):
    """The showdown section of the README and of docs/results.md, tables and every figure of the
    prose around them, are what `python -m b2b.tools.showdown_docs` writes from the shipped records."""
    from pathlib import Path

    from b2b.tools.showdown_docs import readme_section, results_section, shipped_rows

    rows = shipped_rows(tmp_path / "runs" / "showdown-tiny")
    root = Path(__file__).resolve().parents[1]
    assert readme_section(rows) in (root / "README.md").read_text(), "rerun python -m b2b.tools.showdown_docs"
    assert results_section(rows) in (root / "docs" / "results.md").read_text(), "rerun python -m b2b.tools.showdown_docs"


def test_the_course_tables_state_the_showdown_runs_the_records_hold(tmp_path):
    """Notebook 08's row in the README and in docs/course.md says which of the showdown's (method, seed)
    cells the `tiny` records ship: how many runs, and each method with fewer than three seeds."""
    from pathlib import Path

    from b2b.tools.showdown import METHODS
    from b2b.tools.showdown_docs import shipped_rows

    rows = shipped_rows(tmp_path / "runs" / "showdown-tiny")
    seeds = {m: sum(r["method"] == m for r in rows) for m in METHODS}
    short = [f"{m} ({n} seed{'s' if n > 1 else ''})" if n else f"{m} (none)" for m, n in seeds.items() if n < 3]
    said = (f"`tiny` ships {len(rows)} runs: {', '.join(short)}, every other method 3" if short
            else f"`tiny` ships all {len(rows)} runs")
    root = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/course.md"):
        row = next(line for line in (root / doc).read_text().splitlines() if "[08_showdown]" in line)
        assert said in row, (doc, said)


def test_the_real_models_section_of_the_readme_is_what_its_records_hold(tmp_path):
    """The README's SmolLM2-in-the-tiny-world figures are `python -m b2b.tools.smollm2_world --write`'s,
    from the shipped records (the runs, the fine-tune's record, the reward probe); read without a model."""
    from pathlib import Path

    from b2b.tools import smollm2_world as w

    hs = {name: w.history(name, tmp_path / "runs" / "smollm2-tiny") for name in w.RUNS}
    assert all(json.loads((tmp_path / "runs/smollm2-tiny" / n / "config.json").read_text())["policy"]
               == "smollm2-135m-tiny-sft" for n in w.RUNS)
    body = w.readme_section(hs, w.sft_record(), w.shipped_probe())
    assert body in (Path(__file__).resolve().parent.parent / "README.md").read_text(), \
        "rerun python -m b2b.tools.smollm2_world --write"


def test_the_real_models_claims_are_checked_as_written():
    """Claim 1 (vanilla): the last evaluation at least 1.0 below the peak, the peak before it, the proxy
    above the proxy at the peak; claim 2 (RLOO + KL): above SFT at the end and within 1.0 of its peak."""
    from b2b.runs import History
    from b2b.tools.smollm2_world import claims

    def h(golds, proxies):
        return History(evals=[{"step": 10 * i, "gold_mean": g, "proxy_mean": p, "distinct_2": 0.5, "kl_ref": i}
                              for i, (g, p) in enumerate(zip(golds, proxies))])

    rows = claims({"reinforce-seed0": h([3, 5, 4.0], [0, 1, 2]),      # fell 1.0, proxy rose: held
                   "reinforce-seed1": h([3, 5, 4.1], [0, 1, 2]),      # fell 0.9: not
                   "reinforce-seed2": h([3, 5, 3.0], [0, 1, 0.5]),    # fell, but the proxy fell too: not
                   "reinforce-seed3": h([3, 4, 5.0], [0, 1, 2]),      # still rising at the end: not
                   "rloo-k-4-kl-seed0": h([3, 5, 4.5], [0, 1, 2]),    # above SFT, 0.5 below its peak: held
                   "rloo-k-4-kl-seed1": h([3, 5, 3.9], [0, 1, 2]),    # fell 1.1 from its peak: not
                   "rloo-k-4-kl-seed2": h([3, 2.5, 2.9], [0, 1, 2])}) # below SFT: not
    assert [r["held"] for r in rows] == [True, False, False, False, True, False, False]
    assert rows[0]["peak_step"] == 10 and rows[0]["final_kl"] == 2 and rows[4]["proxy_at_peak"] == 1
