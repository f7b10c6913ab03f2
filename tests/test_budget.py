"""The step-time model (`b2b.budget`) against this CPU's measured phases, and the colab plans
against their budget: 15 minutes a notebook on a T4, 5 GB of disk."""
from pathlib import Path

import pytest

from b2b import budget, colab


def test_cpu_model_predicts_the_measured_phases_of_the_real_model_runs():
    """The CPU's rates come from one measurement (the SmolLM2 RLOO bench: 64 rollouts of 32 tokens);
    the shipped tiny-smollm2 runs (16 rollouts of up to 48, vanilla REINFORCE and RLOO + KL, every
    step timed) are other batches, lengths and a retokenizing reward model: each phase's median
    measured / predicted must be within a factor of 1.5, on every run (`b2b.tools.budget_check`)."""
    from b2b.tools import smollm2_world

    from b2b.tools.budget_check import cpu_check

    rows = cpu_check()
    assert [r["run"] for r in rows] == list(smollm2_world.RUNS)
    for r in rows:
        for phase in ("generate", "score", "learn"):
            assert 1 / 1.5 <= r[phase] <= 1.5, (r["run"], phase, r[phase])


def test_the_model_scales_with_what_it_counts():
    """Twice the rollouts, twice the learn FLOPs; checkpointing adds a forward; a reference policy
    adds the score phase's policy forward; a T4 outruns this CPU on every phase."""
    hw, cpu = budget.T4, budget.cpu_here()
    one = budget.rl_step_seconds(cpu, budget.SMOLLM2, budget.TINY_RM, 16, 40, 24, 48)
    two = budget.rl_step_seconds(cpu, budget.SMOLLM2, budget.TINY_RM, 32, 40, 24, 48)
    adamw = budget.ADAMW_BYTES * budget.SMOLLM2.params / cpu.bandwidth
    assert two["learn"] - adamw == pytest.approx(2 * (one["learn"] - adamw), rel=1e-9)
    ckpt = budget.rl_step_seconds(cpu, budget.SMOLLM2, budget.TINY_RM, 16, 40, 24, 48, checkpointing=True)
    assert (ckpt["learn"] - adamw) / (one["learn"] - adamw) == pytest.approx(4 / 3)
    no_ref = budget.rl_step_seconds(cpu, budget.SMOLLM2, budget.TINY_RM, 16, 40, 24, 48, reference=False)
    assert no_ref["score"] < one["score"] / 10
    t4 = budget.rl_step_seconds(hw, budget.SMOLLM2, budget.TINY_RM, 16, 40, 24, 48)
    assert all(t4[k] < one[k] for k in ("generate", "score", "learn"))
    assert budget.SMOLLM2.params == pytest.approx(134.5e6, rel=0.01)


@pytest.mark.parametrize("notebook", colab.PLANNED)
def test_each_planned_colab_notebook_fits_15_minutes_and_5_gb_on_a_t4(notebook):
    from b2b.config import get_profile

    stages = colab.colab_plan(notebook, get_profile("colab"))
    assert stages, notebook
    assert budget.plan_seconds(stages) <= budget.NOTEBOOK_BUDGET_S, budget.budget_line(stages)
    assert sum(s.disk for s in stages) <= budget.T4.disk_bytes
    assert all(s.memory <= 0.75 * budget.T4.memory_bytes for s in stages), [(s.label, s.memory) for s in stages]


def test_each_notebook_announces_exactly_its_planned_stages():
    """Every stage in a notebook's colab plan is announced in the notebook (`b2b.colab.announce`,
    which prints its estimate before the bar starts and, in colab-smoke, fails on a label the plan
    does not hold), and the notebook announces nothing the plan leaves out."""
    import json
    import re
    from pathlib import Path

    from b2b.config import get_profile

    root = Path(__file__).resolve().parents[1] / "notebooks"
    for notebook in colab.PLANNED:
        nb = json.loads(next(root.glob(f"{notebook}_*.ipynb")).read_text())
        code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        announced = set(re.findall(r'b2b\.colab\.announce\(profile, "(\d\d)", "([^"]+)"', code))
        assert {n for n, _ in announced} <= {notebook}, (notebook, announced)
        planned = {s.label for s in colab.colab_plan(notebook, get_profile("colab"))}
        if notebook in colab.GOLD:  # the fine-tune happens in the setup line, which says so itself
            planned -= {budget.sft_stage().label}
            assert "b2b.setup(drive=DRIVE, gold=True)" in code, notebook
        assert {label for _, label in announced} == planned, notebook


def test_announce_prints_the_estimate_in_colab_and_refuses_an_unplanned_stage(capsys):
    from b2b.config import get_profile
    from b2b.errors import ConfigError

    cp = get_profile("colab")
    label = colab.colab_plan("01", cp)[0].label
    colab.announce(cp, "01", label)
    out = capsys.readouterr().out
    assert out.startswith(f"{label}: about ") and "on a Colab T4" in out
    with pytest.raises(ConfigError, match="not in notebook 01's colab plan"):
        colab.announce(cp, "01", "something else")
    colab.announce(get_profile("ci"), "01", "something else")  # the tiny world: nothing to say
    assert capsys.readouterr().out == ""
    from b2b.config import smollm2_world

    smoke = smollm2_world("tiny-smollm2-smoke", policy="unused")  # 04-08 on SmolLM2: their plans, checked
    colab.announce(smoke, "04", "seeds 1 and 2")
    assert capsys.readouterr().out.startswith("seeds 1 and 2: about ")
    with pytest.raises(ConfigError, match="not in notebook 04's colab plan"):
        colab.announce(smoke, "04", "a fourth seed")
    colab.announce(cp, "04", "a fourth seed")  # 04 never runs in colab itself (gold=True): nothing to check


def test_drive_keeps_runs_across_runtimes_on_colab_and_says_the_cost_without_it(monkeypatch, tmp_path, capsys):
    """On Colab (faked: `google.colab` imported), `setup(drive=True)` moves the working directory to
    the Drive folder, so `runs/...` written by one notebook is found by the next in a fresh runtime;
    without Drive one line says what a new runtime costs; off Colab the working directory stays."""
    import os
    import sys
    import types

    from b2b.config import get_profile
    from b2b.session import keep_on_drive

    monkeypatch.chdir(tmp_path)
    colab = get_profile("colab")
    assert keep_on_drive(True, colab) is None and os.getcwd() == str(tmp_path)   # not on Colab
    assert "not on Colab" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    drive = tmp_path / "MyDrive" / "b2b"
    monkeypatch.setenv("B2B_DRIVE_DIR", str(drive))
    assert keep_on_drive(False, colab) is None and os.getcwd() == str(tmp_path)
    out = capsys.readouterr().out
    assert "for this runtime only" in out and "trains the reward model again (about" in out and "DRIVE = True" in out
    (drive / "runs" / "rm-colab-level1").mkdir(parents=True)                    # notebook 01 saved it there
    assert keep_on_drive(True, colab) == drive and os.getcwd() == str(drive)
    out = capsys.readouterr().out
    assert "kept on Google Drive" in out and "(1 saved there: rm-colab-level1)" in out
    from b2b.reward_models import course_reward_dir

    assert (Path(os.getcwd()) / course_reward_dir(colab, 1)).is_dir()           # where notebook 03 looks


def test_each_planned_notebooks_header_states_its_plans_minutes():
    """The header's Colab figure is the plan's estimate, rounded to minutes, fresh and with saved copies."""
    import json
    from pathlib import Path

    from b2b.config import get_profile

    root = Path(__file__).resolve().parents[1] / "notebooks"
    for notebook in colab.PLANNED:
        head = "".join(json.loads(next(root.glob(f"{notebook}_*.ipynb")).read_text())["cells"][0]["source"])
        stages = colab.colab_plan(notebook, get_profile("colab"))
        fresh, saved = (budget.minutes(budget.plan_seconds(stages, s)) for s in (False, True))
        head = head.replace("\n", " ")
        where = ("(SmolLM2 in the tiny world, `tiny-smollm2`, where `b2b.setup(gold=True)` puts a Colab learner)"
                 if notebook in colab.GOLD else "(`colab` profile)")
        assert f"on a Colab T4 {where} {fresh} in a fresh runtime" in head, notebook
        assert fresh == saved or f"in a fresh runtime, {saved} " in head, notebook


def test_the_readme_states_the_plans_minutes():
    from b2b.config import get_profile

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\n", " ")
    mins = [round(budget.plan_seconds(colab.colab_plan(nb, get_profile("colab"))) / 60) for nb in ("01", "02", "03")]
    assert f"notebooks 01-03 at about {mins[0]}, {mins[1]} and {mins[2]} minutes in a fresh runtime" in readme
    gold = [round(budget.plan_seconds(colab.colab_plan(nb)) / 60) for nb in colab.GOLD]
    assert f"notebooks 04-08 at about {gold[0]}, {gold[1]}, {gold[2]}, {gold[3]} and {gold[4]} minutes in a fresh runtime" in readme


def test_a_measured_run_calibrates_the_model_round_trip(tmp_path):
    """`measured_hardware` inverts the model: phases predicted with known efficiencies, read back as
    a `b2b memory` row, give those efficiencies again (fp16 autocast, frozen share, decode overhead)."""
    import dataclasses

    truth = dataclasses.replace(budget.T4, autocast_eff=0.2, frozen_eff=0.3, decode_overhead_s=0.01)
    p = budget.rl_step_seconds(truth, budget.SMOLLM2, budget.SMOLLM2_RM, 32, 609, 128, 128, checkpointing=True)
    row = {"stage": "rl reinforce", "prompt_tokens": 609, "mean_length": 128, "precision": "fp16", "reference": True,
           "settings": {"batch_size": 32, "max_new_tokens": 128, "gradient_checkpointing": True, "updates": 1},
           "phases": {k: p[k] for k in ("generate", "score", "learn")}}
    got = budget.measured_hardware([{"stage": "reward level 1"}, row])
    assert got.autocast_eff == pytest.approx(0.2) and got.frozen_eff == pytest.approx(0.3)
    assert got.decode_overhead_s == pytest.approx(0.01) and got.train_eff == budget.T4.train_eff
    fp32 = budget.measured_hardware([{**row, "precision": "fp32"}])
    assert fp32.autocast_eff == 0.0 and fp32.train_rate == pytest.approx(got.train_rate)

    # a T4's record (`b2b memory --record`) is what the colab plans then use; another GPU's, or none, is not
    import json

    record = tmp_path / "gpu_colab.json"
    assert budget.plan_hardware(record) is budget.T4
    from b2b.tools.memory import write_record

    rec = write_record(record, [row], "colab", device="Tesla T4")
    t4 = budget.plan_hardware(record)
    assert t4.name == f"Colab T4 (measured {rec['date']})" and t4.autocast_eff == pytest.approx(0.2)
    slower = colab.colab_plan("04", hw=t4)[1].seconds / colab.colab_plan("04", hw=budget.T4)[1].seconds
    assert slower != pytest.approx(1.0)  # the plans follow the measured efficiencies
    record.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "rows": [row]}))
    assert budget.plan_hardware(record) is budget.T4


def test_docs_colab_shows_the_plans_as_the_code_computes_them():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "colab.md").read_text()
    assert colab.plan_table() in doc


def test_a_notebook_that_needs_gold_runs_smollm2_in_the_tiny_world_off_the_tiny_policy(monkeypatch, tmp_path, capsys):
    """`b2b.setup(gold=True)` (notebooks 04-08): colab -> tiny-smollm2, colab-smoke -> tiny-smollm2-smoke,
    saying why in one line; the tiny world stays itself. (The models' folders are stand-ins here:
    nothing is fine-tuned.)"""
    import b2b

    for env in ("B2B_SMOLLM2", "B2B_SMOLLM2_TINY", "B2B_SMOLLM2_TINY_SMOKE"):
        d = tmp_path / env
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(b"")
        monkeypatch.setenv(env, str(d))
    monkeypatch.delenv("B2B_PROFILE", raising=False)
    for name, world in (("colab", "tiny-smollm2"), ("colab-smoke", "tiny-smollm2-smoke")):
        p = b2b.setup(name, gold=True)
        out = capsys.readouterr().out
        assert p.name == world and p.world and p.policy == str(tmp_path / ("B2B_SMOLLM2_TINY" + ("_SMOKE" if "smoke" in world else "")))
        assert f"{name} has no gold judge, and this notebook's lesson needs one" in out and "no gold judge here" not in out
        assert b2b.setup(name).name == name  # notebooks 00-03: no gold asked for
        capsys.readouterr()
    assert b2b.setup("ci", gold=True).name == "ci"


def test_the_gold_notebooks_plans_fit_and_keep_their_runs_on_colabs_disk():
    """On SmolLM2 every run keeps its final policy only (0.54 GB); the clipping runs none, the showdown
    only the cells notebooks 05 and 06 load; the plans count it."""
    from b2b.config import get_profile, smollm2_world
    from b2b.recipes import clip_demo, rl_config, showdown_settings

    p = smollm2_world("tiny-smollm2", policy="unused")
    assert not rl_config(p).checkpoint_optimizer and rl_config(p).keep_checkpoints == 1
    assert all(c.checkpoint_every == 0 for c in clip_demo(p).values())
    assert showdown_settings(p) == {"seeds": (0,), "keep_weights": False}
    smoke = smollm2_world("tiny-smollm2-smoke", policy="unused")  # CI's real-model suite: the same disk path
    assert showdown_settings(smoke) == {"seeds": (0,), "keep_weights": False}
    assert all(c.checkpoint_every == 0 for c in clip_demo(smoke).values())
    assert showdown_settings(get_profile("tiny"))["keep_weights"]  # the tiny policy's runs are 13 MB
    run = budget.SMOLLM2.params * 4
    assert colab.colab_plan("08")[1].disk == 2 * run and colab.colab_plan("04")[2].disk == 2 * run
