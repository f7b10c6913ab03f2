"""The bad-input table (`b2b.tools.troubleshooting`): every case fails with its error, in one line that
names the file, field or step, and leaves nothing half-written; docs/troubleshooting.md's
section is this table, rendered from the real messages."""
import json
import math
import re
from pathlib import Path

import pytest
import torch

from b2b.tools import troubleshooting as ts
from b2b.errors import ConfigError, DataError, ModelError, TrainingError

ROOT = Path(__file__).resolve().parent.parent
CASES = ts.cases()
WAYS = [(c, via) for c in CASES for via in ("cli", "api") if getattr(c, via) is not None]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("troubleshooting")


@pytest.fixture(scope="module")
def outcomes(scratch) -> dict:
    """Every case run once, every way it has (the troubleshooting page's test renders these same outcomes)."""
    return {(o.case.id, o.via): o for o in ts.run_all(scratch)}


def test_the_table_covers_every_kind_of_problem():
    ids = [c.id for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert all(c.cli or c.api for c in CASES) and all(c.fragment and c.fix and c.symptom for c in CASES)
    kinds = {c.error for c in CASES}
    assert kinds == {DataError, ConfigError, ModelError, TrainingError}
    data = [c for c in CASES if c.error is DataError and c.cli and c.api]
    assert sum(c.id.startswith("jsonl") for c in data) >= 10 and sum(c.id.startswith("csv") for c in data) >= 6
    for needed in ("prompt-too-long", "max-new-tokens-too-big", "rloo-k-1", "batch-not-multiple-of-k",
                   "config-unknown-key", "config-wrong-type", "model-dir-missing", "model-no-tokenizer",
                   "nan-reward-model", "lr-far-too-high", "oom-step",
                   "out-holds-run", "out-holds-model", "reward-model-out-taken"):
        assert needed in ids, needed


@pytest.mark.parametrize("case,via", WAYS, ids=[f"{c.id}-{v}" for c, v in WAYS])
def test_bad_input_gives_one_line_naming_the_field_and_leaves_nothing_behind(outcomes, scratch, case, via):
    o = outcomes[(case.id, via)]
    if via == "cli":
        assert o.error is None, f"b2b crashed with {o.error}: {o.message}"
        assert o.exit_code == 2, o.stderr
        assert o.stderr.startswith("error: ") and o.lines == 1, o.stderr
    else:
        assert o.error == case.error.__name__, f"{o.error}: {o.message}"
    assert o.message and "\n" not in o.message
    assert case.fragment in o.message, o.message
    assert "Traceback" not in o.message
    d = scratch / f"{case.id}-{via}"
    if case.output == "none":
        assert o.changed == [], f"left behind: {o.changed}"
        return
    _assert_stopped_run_keeps_its_last_good_checkpoint(o.message, d / ts.OUT)


def _assert_stopped_run_keeps_its_last_good_checkpoint(message: str, out: Path) -> None:
    """A run stopped by a fault: the message names the newest checkpoint (or none), whose weights
    are finite, and no final policy was written as if the run had finished."""
    from safetensors.torch import load_file

    m = re.search(r"last good checkpoint: (\S+?)[.;]?(?:\s|$)", message)
    assert m, message
    found = sorted((out / "checkpoints").glob("step-*"))
    if m.group(1) == "none":
        assert found == []
    else:
        assert found and Path(m.group(1)) == found[-1]
        weights = load_file(found[-1] / "policy.safetensors")
        assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    assert not list((out / "checkpoints").glob(".tmp-*")) and not (out / "policy").exists()


def test_the_troubleshooting_page_is_the_rendered_table(outcomes, scratch):
    readme = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    rendered = ts.markdown(list(outcomes.values()), scratch)
    assert rendered.count("\n") + 1 == 2 + len(CASES)
    assert str(scratch) not in rendered and str(ROOT) not in rendered
    assert ts.section(readme) == rendered, "regenerate it: python -m b2b.tools.troubleshooting --write docs/troubleshooting.md"


def test_lr_one_trains_finitely_or_stops_with_a_clear_error(tmp_path):
    """lr = 1.0 on the tiny policy: gradient clipping keeps it finite (it collapses onto one answer)
    or it stops with the one-line error naming the step; never a torch error or a NaN in the log."""
    from b2b.config import get_profile
    from b2b.data import rl_prompts

    prompts = rl_prompts(get_profile("ci"))[0][:200]
    try:
        h = ts.tiny_train(tmp_path, prompts=prompts, steps=6, lr=1.0, checkpoint_every=2)
    except TrainingError as e:
        assert re.match(r"step [1-6]: .+ is not finite \(NaN or inf\)", str(e)) and "\n" not in str(e)
        _assert_stopped_run_keeps_its_last_good_checkpoint(str(e), tmp_path / ts.OUT)
        return
    assert [r["step"] for r in h.steps] == [1, 2, 3, 4, 5, 6]
    for row in h.steps:
        bad = {k: v for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, f"step {row['step']}: {bad}"


def test_a_broken_policy_fails_sampling_with_a_clear_error_not_a_torch_one(tiny_dir, tokenizer):
    from b2b.models import load_policy
    from b2b.rollout import sample_completions

    policy = load_policy(tiny_dir)
    with torch.no_grad():
        policy.lm_head.weight[5].fill_(float("inf"))
    with pytest.raises(TrainingError, match=r"sampling probabilities are not finite \(NaN or inf\) for 2 of 2"):
        sample_completions(policy, tokenizer, ts.PROMPTS[:2], 8, 1.0, torch.Generator().manual_seed(0))


def test_the_sampler_draws_each_token_with_its_probability_and_flags_non_finite_rows():
    from b2b.rollout import _sample

    p = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0])
    logits = p.log().repeat(200_000, 1)  # -inf logits: probability exactly 0
    tok, logp, bad = _sample(logits, 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=5).float() / len(tok)
    assert torch.allclose(freq, p, atol=0.004) and freq[1] == 0 and freq[4] == 0  # never a 0-probability token
    assert torch.allclose(logp, p.log()[tok]) and not bad.any()
    t2 = _sample(logits[:1000], 1.0, torch.Generator().manual_seed(0))[0]
    assert torch.equal(t2, tok[:1000])  # the generator makes draws reproducible
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1)) * 3
    hot = _sample(logits, 0.05, torch.Generator().manual_seed(0))[0]
    assert torch.equal(hot, logits.argmax(-1))  # near-zero temperature: the argmax
    logits[2, 5] = float("nan")
    assert _sample(logits, 1.0, torch.Generator().manual_seed(0))[2].tolist() == [False, False, True, False]


def test_prompt_length_check_is_exact_at_the_boundary(tokenizer):
    from b2b.data import check_prompt_lengths
    from b2b.rollout import chat_prompts

    p = "Describe a tiger."
    n = len(tokenizer(chat_prompts(tokenizer, [p]), add_special_tokens=False)["input_ids"][0])
    check_prompt_lengths(tokenizer, ["Hi", p], 10, n + 10)            # fits exactly
    with pytest.raises(DataError, match=rf"^prompt 1: field 'prompt': expected at most {n - 1} tokens .+, got {n} "):
        check_prompt_lengths(tokenizer, ["Hi", p, p], 10, n + 9)
    with pytest.raises(DataError, match=r"^x.csv: line 9: field 'prompt'"):
        check_prompt_lengths(tokenizer, [p], 10, n + 9, locate=lambda prompt: "x.csv: line 9")


def test_sampling_a_prompt_longer_than_the_context_is_refused(tokenizer, policy):
    from b2b.rollout import sample_completions

    with pytest.raises(DataError, match=r"^prompt 1: field 'prompt': expected at most 192 tokens"):
        sample_completions(policy, tokenizer, ["Hi", ts.LONG_PROMPT], 64)


@pytest.mark.parametrize("batch,multiple,want", [(32, 1, 16), (8, 4, 4), (12, 4, 4), (4, 4, None), (1, 1, None)])
def test_out_of_memory_suggests_half_the_batch_in_whole_groups(batch, multiple, want):
    from b2b.guards import smaller_batch as _smaller_batch

    assert _smaller_batch(batch, multiple) == want


def test_run_reuses_its_own_reward_model_refuses_a_second_run_and_overwrites_on_request(tmp_path, data_dir, capsys):
    """A directory holding only reward_model/ is a run's own reward model (--skip-reward-training);
    a finished run is refused; --overwrite starts over and drops the stale final policy."""
    import shutil

    from b2b.tools.cli import main

    out = tmp_path / "run"
    shutil.copytree(data_dir / "rm-level1", out / "reward_model")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eval_every: 0\neval_prompts: 4\nmax_new_tokens: 8\ncheckpoint_every: 1\n")
    args = ["run", "--profile", "ci", "--skip-reward-training", "--steps", "1", "--batch-size", "4", "--config",
            str(cfg), "--out", str(out), "--json"]
    assert main(args) == 0
    assert f"reward model: {out / 'reward_model'}" in capsys.readouterr().out
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(args) == 2
    assert "already holds a run (checkpoints, metrics.jsonl" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    (out / "policy" / "stale.txt").write_text("from the old run")
    assert main(args + ["--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 1
    assert not (out / "policy" / "stale.txt").exists() and (out / "policy" / "b2b_run.json").exists()
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-000001"]
