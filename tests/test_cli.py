import json
import subprocess
import sys

import pytest

from b2b.tools.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "b2b", *args], capture_output=True, text=True, timeout=300)


def test_evaluate_json_contract(tiny_dir, capsys):
    assert main(["evaluate", "--policy", str(tiny_dir), "--n", "24", "--json", "--samples", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    for key in ("gold_mean", "eos_rate", "distinct_2", "mean_length", "reference_distinct_2"):
        assert isinstance(res[key], float), key
    assert "proxy_mean" not in res
    assert 1.0 <= res["gold_mean"] <= 10.0 and 0.0 <= res["eos_rate"] <= 1.0
    assert res["n"] == 24
    assert any("completions/distinct_2" in line for line in out)


def test_evaluate_with_a_reward_model_reports_proxy_mean(tiny_dir, tmp_path, capsys):
    from b2b.models import load_reward_model

    load_reward_model(tiny_dir, num_labels=1).save_pretrained(tmp_path / "rm")
    assert main(["evaluate", "--policy", str(tiny_dir), "--reward-model", str(tmp_path / "rm"),
                 "--n", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(res["proxy_mean"], float)


def test_evaluate_is_reproducible(tiny_dir, capsys):
    runs = []
    for _ in range(2):
        main(["evaluate", "--policy", str(tiny_dir), "--n", "16", "--json", "--seed", "3"])
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    drop = ("seconds",)
    assert {k: v for k, v in runs[0].items() if k not in drop} == {k: v for k, v in runs[1].items() if k not in drop}


def test_bad_policy_path_is_one_line_error(tmp_path):
    r = _run("evaluate", "--policy", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "model directory not found" in r.stderr
    assert "Traceback" not in r.stderr


def test_build_data_check_passes_and_fails(tmp_path, capsys):
    from b2b.tools.cli import main

    assert main(["build-data", "--check"]) == 0  # in-process: reuses the rows test_data built
    assert "match" in capsys.readouterr().out
    r = _run("build-data", "--check", "--out", str(tmp_path))
    assert r.returncode == 1 and "prefs_train.jsonl" in r.stderr


def test_build_data_check_names_the_line_and_field_of_a_corrupted_file(tmp_path, data_dir):
    lines = (data_dir / "prefs_test.jsonl").read_text().splitlines(keepends=True)
    lines[41] = lines[41].replace('"role":"assistant"', '"role":"robot"', 1)
    (tmp_path / "prefs_test.jsonl").write_text("".join(lines))
    r = _run("build-data", "--check", "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: {tmp_path / 'prefs_test.jsonl'}: line 42: field 'chosen[1].role': "
                                "expected one of system, user, assistant, got 'robot'")


def test_python_dash_m_and_console_script_agree():
    r = _run("--help")
    assert r.returncode == 0 and "evaluate" in r.stdout
    import shutil
    exe = shutil.which("b2b")
    if exe is None:
        pytest.skip("console script not on PATH (package not installed)")
    assert subprocess.run([exe, "--help"], capture_output=True, text=True).stdout == r.stdout.replace("__main__.py", "b2b")


def test_run_json_contract_and_evaluate_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--skip-reward-training", "--steps", "2", "--batch-size", "8", "--out", str(out),
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    res = json.loads(lines[-1])
    for part in ("sft", "final"):
        assert set(res[part]) == {"proxy_mean", "gold_mean", "distinct_2", "mean_length", "eos_rate", "kl_ref"}
    assert res["steps"] == 2 and isinstance(res["seconds"], float)
    assert res["peak_gold_mean"] >= max(res["sft"]["gold_mean"], res["final"]["gold_mean"]) - 1e-9
    assert any(line.startswith("| Model | Eval Reward | Improvement |") for line in lines)
    assert main(["evaluate", "--policy", str(out / "policy"), "--n", "8", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ev = json.loads(lines[-1])
    assert "proxy_mean" in ev and "proxy_mean" in ev["sft"]       # the run's reward model, found from the policy
    assert any(line.startswith("| RL policy |") for line in lines)
    r = _run("run", "--skip-reward-training", "--steps", "2", "--out", str(out))
    assert r.returncode == 2 and "already holds a run" in r.stderr and r.stderr.count("\n") == 1


def test_run_rloo_flags_and_showdown_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "rloo"
    assert main(["run", "--skip-reward-training", "--algo", "rloo", "--k", "2", "--kl-coef", "0.1", "--kl-estimator",
                 "k3", "--steps", "2", "--batch-size", "8", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == 2 and res["sft"]["kl_ref"] == 0.0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["algo"], cfg["k"], cfg["kl_coef"], cfg["kl_estimator"]) == ("rloo", 2, 0.1, "k3")
    r = _run("run", "--skip-reward-training", "--algo", "rloo", "--k", "1", "--out", str(tmp_path / "bad"))
    assert r.returncode == 2 and "'k'" in r.stderr and r.stderr.count("\n") == 1

    args = ["showdown", "--profile", "ci", "--methods", "vanilla REINFORCE", "RLOO k=2 + KL", "--seeds", "0",
            "--steps", "2", "--out", str(tmp_path / "sd"), "--final-evals", "2", "--sft-evals", "3", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [m["method"] for m in first["methods"]] == ["vanilla REINFORCE", "RLOO k=2 + KL"]
    assert {"gold", "gold_std", "kl", "proxy", "distinct2_ratio", "gold_pooled", "gold_gain_pooled"} <= set(first["methods"][0])
    pooled, sft = first["runs"][0]["final_pooled"], first["sft_pooled"]   # 2 (3) evaluations pooled
    assert (pooled["repeats"], sft["repeats"], 2 * sft["n"]) == (2, 3, 3 * pooled["n"]) and sft["kl_ref"] == 0.0
    assert (tmp_path / "sd" / "vanilla-reinforce-seed0" / "final_pooled.json").exists()
    assert main(args) == 0                                            # finished runs are read back, not retrained
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["runs"] == first["runs"] and again["seconds"] < first["seconds"]
    from b2b.config import get_profile
    from b2b.tools.showdown import run_showdown

    shorter = run_showdown(get_profile("ci"), seeds=(0,), methods=["vanilla REINFORCE"], out=tmp_path / "sd", steps=1,
                           progress=False, final_evals=2, sft_evals=3)   # read back from the 2-step run
    assert shorter[0]["steps"] == 1 and "final_pooled" not in shorter[0]  # no checkpoint of step 1: no pooled figure
    r = _run("showdown", "--methods", "PPO", "--profile", "ci")
    assert r.returncode == 2 and "unknown 'PPO'" in r.stderr
    args_nt = [a for a in args if a != "--json"] + ["--no-train", "--json"]
    assert main(args_nt[:args_nt.index("--seeds")] + ["--seeds", "0", "1"] + args_nt[args_nt.index("--seeds") + 2:]) == 0
    read = capsys.readouterr().out                                    # seed 1 is not there: named, not trained
    assert "not trained here (2 cells" in read and [(r["method"], r["seed"], r["final"]) for r in json.loads(read.strip().splitlines()[-1])["runs"]] == \
        [(r["method"], r["seed"], r["final"]) for r in first["runs"]]
    r = _run("showdown", "--profile", "ci", "--no-train", "--out", str(tmp_path / "nothing"), "--final-evals", "0")
    assert r.returncode == 2 and "no finished run or shipped record" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("text,msg", [("stepz: 3\n", "unknown key 'stepz'"), ("steps: three\n", "key 'steps': expected int"),
                                      ("reward:\n  lr: fast\n", "key 'reward.lr': expected float"),
                                      ("- 1\n", "expected a mapping")])
def test_run_config_file_errors_name_the_key(tmp_path, text, msg):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    r = _run("run", "--config", str(f), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and msg in r.stderr and str(f) in r.stderr and "Traceback" not in r.stderr


def test_showdown_cache_treats_settings_a_run_predates_as_defaults():
    import dataclasses

    from b2b.tools.showdown import same_config
    from b2b.rl_config import RLConfig

    want = dataclasses.asdict(RLConfig(algo="rloo", k=4, kl_coef=0.5))
    old = {k: v for k, v in want.items() if k != "reward_clip"}  # saved before reward_clip existed
    assert same_config(want, want) and same_config(old, want)
    assert not same_config({**old, "kl_coef": 0.3}, want)
    assert not same_config({**want, "reward_clip": 5.0}, want)  # saved with another value
    assert not same_config({**want, "removed_field": 1}, want) and not same_config(None, want)
    # what a run keeps on disk is not what it computes: the same run whatever its checkpoints
    assert same_config({**want, "checkpoint_every": 0, "keep_checkpoints": 1, "checkpoint_optimizer": False}, want)
    from b2b.tools.showdown import METHODS, _slug

    slugs = [_slug(m) for m in METHODS]
    assert len(set(slugs)) == len(slugs) and "reinforcepp" in slugs and "rloo-k-4-kl" in slugs


def test_cached_run_loads_a_finished_run_and_resumes_a_killed_one(tmp_path, monkeypatch):
    import dataclasses
    import shutil
    import sys

    from b2b.config import get_profile
    from b2b.recipes import rl_config
    from b2b.tools.showdown import cached_run

    profile = get_profile("ci")
    cfg = dataclasses.replace(rl_config(profile, "rloo", k=2), steps=4, checkpoint_every=2, eval_every=2,
                              eval_prompts=8)
    h = cached_run(profile, cfg, tmp_path / "r", progress=False)
    from b2b import runs

    trained, resumed_from = [], []  # the steps trained, the checkpoints resumed from
    T = sys.modules["b2b.train"]  # (the package exports the function `b2b.train`)
    real_step, real_load = T.rl_step, runs.load_checkpoint
    monkeypatch.setattr(T, "rl_step", lambda *a, **kw: trained.append(a[9]) or real_step(*a, **kw))
    monkeypatch.setattr(runs, "load_checkpoint", lambda ck, *a: resumed_from.append(ck.name) or real_load(ck, *a))
    again = cached_run(profile, cfg, tmp_path / "r", progress=False)  # finished: read back, not retrained
    assert trained == [] and resumed_from == [] and again.evals == h.evals and len(again.steps) == 4
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step-000004")  # as if killed after step 2
    resumed = cached_run(profile, cfg, tmp_path / "r", progress=False)
    assert resumed_from == ["step-000002"] and trained == [3, 4]
    assert [e["gold_mean"] for e in resumed.evals] == [e["gold_mean"] for e in h.evals]
    longer = cached_run(profile, dataclasses.replace(cfg, steps=6), tmp_path / "r", progress=False)
    assert resumed_from[-1] == "step-000004" and trained[2:] == [5, 6] and len(longer.steps) == 6  # extended
    fresh = cached_run(profile, dataclasses.replace(cfg, steps=6), tmp_path / "fresh", progress=False)
    assert [r["reward/proxy_mean"] for r in longer.steps] == [r["reward/proxy_mean"] for r in fresh.steps]
    assert [e["gold_mean"] for e in longer.evals] == [e["gold_mean"] for e in fresh.evals]
    import torch

    from b2b.models import load_policy
    from b2b.tools.showdown import run_policy

    a, b = run_policy(profile, tmp_path / "r", 6), run_policy(profile, tmp_path / "fresh", 6)
    sft = load_policy(profile.policy)
    for (name, pa), pb, p0 in zip(a.named_parameters(), b.parameters(), sft.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name  # the extended run's model is the uninterrupted one's
    assert any(not torch.equal(pa, p0) for pa, p0 in zip(a.parameters(), sft.parameters()))  # and it trained
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 1 \(kept: \[.*6\]\)"):
        run_policy(profile, tmp_path / "fresh", 1)
    n, m = len(trained), len(resumed_from)
    short = cached_run(profile, dataclasses.replace(cfg, steps=2), tmp_path / "r", progress=False)
    assert len(trained) == n and short.steps == longer.steps[:2] and [e["step"] for e in short.evals] == [0, 2]
    other = cached_run(profile, dataclasses.replace(cfg, kl_coef=0.1), tmp_path / "r", progress=False)
    assert trained[n:] == [1, 2, 3, 4] and len(resumed_from) == m  # other settings: trained from scratch
    assert len(other.steps) == 4


def test_showdown_claims_per_seed_on_hand_made_rows():
    from b2b.tools.showdown import claims, claims_table

    def row(method, seed, gold, d2=0.5, kl=1.0, sft_gold=5.0):
        return {"method": method, "seed": seed, "sft": {"gold_mean": sft_gold, "distinct_2": 0.5},
                "final": {"gold_mean": gold, "distinct_2": d2, "kl_ref": kl}}

    rows = [row("vanilla REINFORCE", 0, 1.0, kl=20.0), row("RLOO k=4 + KL", 0, 6.6, d2=0.4, kl=2.0),
            row("REINFORCE++", 0, 6.5, kl=1.5),
            # seed 1: RLOO gains only 1.4 (sft 5.1), keeps 0.3 / 0.5 of distinct-2, ends 0.1 below vanilla with
            # vanilla's KL; REINFORCE++ drifts further
            row("vanilla REINFORCE", 1, 6.6, sft_gold=5.1), row("RLOO k=4 + KL", 1, 6.5, d2=0.3, kl=1.0, sft_gold=5.1),
            row("REINFORCE++", 1, 7.0, kl=1.5, sft_gold=5.1),
            row("RLOO k=4 + KL", 2, 9.0)]  # seed 2 lacks the other runs: no row
    c = claims(rows)
    assert [x["seed"] for x in c] == [0, 1]
    assert c[0]["RLOO: gold - SFT"] == pytest.approx(1.6) and c[0]["RLOO: distinct-2 / SFT"] == pytest.approx(0.8)
    assert c[0]["RLOO - vanilla: gold"] == pytest.approx(5.6) and c[0]["REINFORCE++: gold - SFT"] == pytest.approx(1.5)
    assert c[0]["RLOO KL / vanilla KL"] == pytest.approx(0.1)
    assert c[0]["REINFORCE++ KL / RLOO KL"] == pytest.approx(0.75) and c[0]["holds"]
    assert c[1]["RLOO: gold - SFT"] == pytest.approx(1.4) and c[1]["RLOO - vanilla: gold"] == pytest.approx(-0.1)
    assert c[1]["RLOO KL / vanilla KL"] == pytest.approx(1.0)
    assert c[1]["REINFORCE++ KL / RLOO KL"] == pytest.approx(1.5) and not c[1]["holds"]
    table = claims_table(c)
    # seed 1 misses the gain, distinct-2 (0.6), vs vanilla's gold and KL, and the KL ratio; the mean, the
    # RLOO / vanilla KL ratio (0.55) and the REINFORCE++ / RLOO one (1.125)
    assert table.count("(missed)") == 7 and table.splitlines()[-1].endswith("| 0.55 (missed) | 1.70 | 1.12 (missed) |")
    assert table.splitlines()[-1].startswith("| mean | 1.50")


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo"])
def test_run_grpo_and_dr_grpo_with_json(algo, tmp_path, capsys):
    out = tmp_path / algo
    assert main(["run", "--skip-reward-training", "--algo", algo, "--k", "2", "--steps", "2", "--batch-size", "8",
                 "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == 2 and set(res["final"]) >= {"gold_mean", "kl_ref"}
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["algo"], cfg["k"], cfg["ppo_epochs"], cfg["minibatches"]) == (algo, 2, 1, 2)  # REINFORCE++-baseline's
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= s["ppo/clip_frac"] <= 1 and 0 <= s["grad/clipped_frac"] <= 1 for s in steps)
