"""Any policy, everywhere: `--policy` on run, showdown and bench, `b2b generate`, and a base model
without a chat template (the plain prompt format). On the tiny policy and small models made here;
the same on the real SmolLM2 weights is tests/test_real_model.py."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from b2b.tools.cli import main

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, tiny_dir) -> Path:
    """A small random GPT-2 (a base architecture, like the REINFORCE++ seed's distilgpt2) with the
    tiny tokenizer minus its chat template: a model without a prompt format of its own."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("base") / "gpt2-base"
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.chat_template = None
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    return d


def _last_json(capsys) -> tuple[dict, str]:
    c = capsys.readouterr()
    return json.loads(c.out.strip().splitlines()[-1]), c.out + c.err


def test_a_base_model_without_a_chat_template_trains_two_steps(base_model, tmp_path, capsys):
    args = ["run", "--profile", "ci", "--policy", str(base_model), "--data", str(DATA / "prefs_english_9.csv"),
            "--algo", "reinforce", "--steps", "2", "--batch-size", "4", "--out", str(tmp_path / "run"), "--json"]
    assert main(args) == 0
    res, out = _last_json(capsys)
    assert res["steps"] == 2 and res["peak_gold_mean"] is None  # everyday-English prompts: no gold judge
    said = [line for line in out.splitlines() if "no chat template (a base model)" in line]
    assert len(said) == 1 and "plain format 'User: ...\\nAssistant:'" in said[0], out
    saved = json.loads((tmp_path / "run/reward_model/config.json").read_text())
    assert saved["architectures"] == ["GPT2ForSequenceClassification"]  # the backbone followed the policy


def test_a_bad_policy_is_a_one_line_error(tmp_path, capsys):
    for cmd in (["run", "--steps", "1"], ["showdown", "--steps", "1"], ["bench", "--steps", "1"]):
        assert main([*cmd, "--profile", "ci", "--policy", str(tmp_path / "nowhere")]) == 2, cmd
        err = capsys.readouterr().err.strip()
        assert err == f"error: {tmp_path / 'nowhere'}: model directory not found (expected a folder with config.json, " \
                      "or a hub id like HuggingFaceTB/SmolLM2-135M-Instruct)", cmd


def test_generate_rates_a_tiny_world_prompt_with_reward_and_gold(tiny_dir, data_dir, capsys):
    assert main(["generate", "--policy", str(tiny_dir), "--prompt", "What colour is a banana?", "--n", "3",
                 "--reward-model", str(data_dir / "rm-level1"), "--profile", "ci", "--json"]) == 0
    res, out = _last_json(capsys)
    assert len(res["completions"]) == 3
    for c in res["completions"]:
        assert 1 <= c["gold"] <= 10 and isinstance(c["reward"], float) and c["completion"] in out
    assert main(["generate", "--policy", str(tiny_dir), "--prompt", "Tell me about Paris.", "--n", "2",
                 "--profile", "ci", "--json"]) == 0
    res, out = _last_json(capsys)
    assert "gold: n/a, not a prompt of the tiny world" in out
    assert all("gold" not in c and "reward" not in c for c in res["completions"])
    assert main(["generate", "--policy", str(tiny_dir), "--prompt", "  ", "--profile", "ci"]) == 2
    assert capsys.readouterr().err.strip() == "error: generate: --prompt: expected non-empty text"


def test_generate_is_reproducible_and_follows_the_seed(tiny_dir, capsys):
    runs = []
    for seed in (0, 0, 1):
        main(["generate", "--policy", str(tiny_dir), "--prompt", "Is a whale a fish?", "--n", "4", "--seed", str(seed),
              "--profile", "ci", "--json"])
        runs.append([c["completion"] for c in _last_json(capsys)[0]["completions"]])
    assert runs[0] == runs[1] != runs[2]


def test_bench_on_another_policy_times_it_without_training_a_reward_model(tiny_dir, tmp_path, capsys, monkeypatch):
    """A copy of the tiny policy is another model to b2b: the shipped reward models are not used for
    it, and the bench does not train one first (a step's time does not depend on what the score head
    learnt): it scores with a fresh head on the policy's backbone, says so, and writes nothing."""
    policy = tmp_path / "my-policy"
    shutil.copytree(tiny_dir, policy)
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--profile", "ci", "--policy", str(policy), "--algos", "reinforce", "--batch-size", "8",
            "--max-new-tokens", "8", "--steps", "1", "--warmup", "0", "--repeat", "1", "--json"]
    assert main(args) == 0
    res, out = _last_json(capsys)
    assert res["profile"] == "ci" and "reinforce" in res["algos"]
    assert "bench: no level-1 reward model for profile ci in runs/rm-ci-level1: scoring with a fresh score head" in out
    assert not (tmp_path / "runs").exists()


def test_without_a_gold_judge_tables_plots_and_claims_leave_gold_out():
    import matplotlib
    matplotlib.use("Agg")
    from b2b import plots
    from b2b.tools import showdown
    from b2b.runs import History
    from b2b.widgets import table_html

    ev = [{"step": s, "proxy_mean": 0.1 * s, "kl_ref": 0.2 * s, "distinct_2": 0.9, "mean_length": 12.0,
           "eos_rate": 0.5, "n": 4} for s in (0, 2)]
    h = History(steps=[{"step": s, "reward/proxy_mean": 0.1 * s, "completions/mean_length": 12.0,
                        "policy/entropy": 1.0, "completions/distinct_2": 0.9} for s in (1, 2)], evals=ev,
                samples=[{"step": 1, "prompt": "Hi there, how are you?", "response": "Fine. Fine. I hope this helps!"}])
    assert h.peak_gold is None
    texts = lambda fig: [t.get_text() for ax in fig.axes for t in ax.texts]  # noqa: E731
    assert any("no gold judge" in t for t in texts(plots.plot_rl_run(h)))
    assert any("no gold judge" in t for t in texts(plots.plot_kl_frontier({"run": h})))
    assert plots.sample_stats(h) == [{"step": 1, "filler": 1.0, "words": 6.0, "repeated sentences": 1.0}]
    rows = [{"method": m, "seed": 0, "samples": 16, "sft": ev[0], "final": ev[1], "peak_gold_mean": None,
             "median_step_s": 1.0} for m in ("RLOO k=4 + KL", "vanilla REINFORCE", "REINFORCE++")]
    agg = showdown.aggregate(rows)
    assert agg[0]["gold"] is None and agg[0]["gold_gain"] is None and agg[0]["proxy"] == 0.2
    assert showdown.claims(rows) == []  # the course's claims are about gold: none to check without it
    assert any("no gold judge" in t for t in texts(showdown.plot_showdown(rows)))
    assert "n/a" in showdown.markdown_table(agg)
    html = table_html([{"run": "a", "gold": None, "proxy": 1.0}, {"run": "b", "gold": None, "proxy": 2.0}])
    assert "gold" not in html and "proxy" in html  # a column empty in every row is left out


def test_config_table_shows_what_matters_and_keeps_small_floats():
    from b2b import widgets
    from b2b.rl_config import RLConfig

    cfg = RLConfig(algo="rloo", k=4, kl_coef=0.05, lr=2e-4)
    rows = {r["setting"]: r["value"] for r in widgets.config_rows(cfg)}
    assert rows["algo"] == "rloo" and rows["k"] == "4" and rows["kl_coef"] == "0.05" and rows["lr"] == "0.0002"
    assert "temperature" not in rows  # left at its default
    assert [r["setting"] for r in widgets.config_rows(cfg, ["k", "lr"])] == ["k", "lr"]
    with pytest.raises(ValueError, match="no field nope"):
        widgets.config_rows(cfg, ["nope"])
    md = widgets.config_table(cfg, ["k"]).data
    assert md.startswith("`RLConfig`: 1 of its") and "| `k` | 4 |" in md
