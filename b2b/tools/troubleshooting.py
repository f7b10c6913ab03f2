"""Every problem b2b reports, as one table: bad data, configs, model paths, prompts that do not fit
the context, numerical faults, running out of GPU memory, a run directory that is already taken.

Each `Case` makes its problem happen in a scratch directory, through `b2b run` / `b2b evaluate`
(the command line, run in-process) and/or through the functions the notebooks call, and states
the error it must raise, a fragment its one-line message must contain (the file, line, field or
step it names) and the fix. The same table drives `tests/test_bad_input.py` and docs/troubleshooting.md's
troubleshooting section, which is rendered from the messages the cases really produce:

    python -m b2b.tools.troubleshooting                     # print the section
    python -m b2b.tools.troubleshooting --write docs/troubleshooting.md   # rewrite it between its markers
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from b2b.errors import ConfigError, DataError, ModelError, TrainingError

START, END = "<!-- troubleshooting:start -->", "<!-- troubleshooting:end -->"

PROMPTS = ["List three fruits.", "What colour is a banana?", "Is a whale a fish?", "Hello!"]
LONG_PROMPT = "Describe a tiger and a banana. " * 40  # ~370 tokens: over the tiny policy's 256 minus 64 new
GOOD = {"prompt": "Hi!", "chosen": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Bye."}],
        "chosen_rating": 7.5, "rejected_rating": 2.0}
CSV_HEAD = "prompt,chosen,rejected,chosen_rating,rejected_rating\n"
CSV_GOOD = "Hi!,Hello! How can I help?,Go away.,8,2\n"
OUT = Path("runs") / "demo"  # the run directory (--out) of every case, inside its scratch directory


@dataclass(frozen=True)
class Case:
    """One problem: how to make it happen, what must be reported, how to fix it.

    `setup(d)` writes the inputs into the scratch directory `d`; then `cli(d)` returns the argv of
    a `b2b` command and/or `api(d)` calls what a notebook calls. Either must fail with `error`
    (the command line: exit status 2 and one `error: ...` line), its message containing
    `fragment`. `output` is what may be left in `d` afterwards: "none" (nothing new or changed)
    or "run" (a stopped run: its logs and the last good checkpoint, which the message names).
    `patch()` is entered around the failing call (e.g. to make CUDA run out of memory).
    """

    id: str
    symptom: str
    error: type
    fragment: str
    fix: str
    setup: Callable[[Path], None] = lambda d: None
    cli: Callable[[Path], list[str]] | None = None
    api: Callable[[Path], object] | None = None
    output: str = "none"
    patch: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class Outcome:
    """What running one case one way ("cli" or "api") produced."""

    case: Case
    via: str
    error: str | None         # class name of what was raised (api), None when nothing was
    message: str              # the error's message ("error: " removed on the command line)
    lines: int                # lines of the message (api) or of stderr (cli)
    exit_code: int | None     # cli only
    changed: list[str]        # paths under the scratch directory created, changed or removed
    stderr: str = ""          # cli only: everything printed on stderr


# ----------------------------------------------------------------------------- inputs

def _data_dir() -> Path:
    from b2b.config import data_dir
    return data_dir()


def _jsonl(name: str, *rows) -> Callable[[Path], None]:
    """setup: a JSONL file holding GOOD, then `rows` (dicts, or raw text lines)."""
    def write(d: Path) -> None:
        lines = [json.dumps(GOOD)] + [r if isinstance(r, str) else json.dumps(r) for r in rows]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return write


def _bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        (d / name).write_bytes(data)
    return write


def _row(**change) -> dict:
    """GOOD with fields replaced (None: removed)."""
    row = json.loads(json.dumps(GOOD))
    for k, v in change.items():
        if v is None:
            row.pop(k)
        else:
            row[k] = v
    return row


def _turns(*roles_and_texts) -> list[dict]:
    return [{"role": r, "content": t} for r, t in roles_and_texts]


def _file(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text, encoding="utf-8")
    return d / name


def _copy_tiny(d: Path, name: str, drop: tuple[str, ...] = (), garble: tuple[str, ...] = ()) -> Path:
    """A copy of the tiny SFT policy with some files removed or overwritten with junk."""
    dst = d / name
    shutil.copytree(_data_dir() / "tiny-sft", dst)
    for f in drop:
        (dst / f).unlink()
    for f in garble:
        (dst / f).write_bytes(b"not a safetensors file")
    return dst


def _fake_run(d: Path) -> None:
    """An earlier run in d/OUT: a checkpoint and its logs."""
    ck = d / OUT / "checkpoints" / "step-000002"
    ck.mkdir(parents=True)
    (ck / "trainer.pt").write_bytes(b"")
    _file(d / OUT, "metrics.jsonl", '{"step": 1}\n{"step": 2}\n')


def _fake_model(d: Path) -> None:
    """A saved reward model in d/OUT (what `b2b run --only-reward-model --out DIR` leaves)."""
    (d / OUT).mkdir(parents=True)
    _file(d / OUT, "config.json", "{}\n")
    (d / OUT / "model.safetensors").write_bytes(b"")


# ----------------------------------------------------------------------------- actions

def _run(d: Path, *args) -> list[str]:
    return ["run", "--profile", "ci", "--out", str(d / OUT), "--json", *map(str, args)]


def _run_data(name: str) -> Callable[[Path], list[str]]:
    return lambda d: _run(d, "--data", d / name)


def _load(name: str) -> Callable[[Path], object]:
    def call(d: Path):
        from b2b.data import load_preferences
        return load_preferences(d / name)
    return call


def _evaluate(*args) -> Callable[[Path], list[str]]:
    """`b2b evaluate` with `args`; `{d}` in an argument stands for the scratch directory."""
    return lambda d: ["evaluate", "--profile", "ci", "--n", "4", *[str(a).format(d=d) for a in args]]


def tiny_train(d: Path, reward=None, prompts=PROMPTS, eval_prompts=None, eval_batch_size: int = 128, resume=None,
               **cfg):
    """`b2b.train` as the notebooks call it, on the tiny policy, small and short, into d/OUT."""
    from b2b.models import load_policy, load_reward_model, load_tokenizer
    from b2b.rl_config import RLConfig
    from b2b.train import train

    tiny = _data_dir() / "tiny-sft"
    rm = reward if reward is not None else load_reward_model(_data_dir() / "rm-level1")
    settings = dict(steps=2, batch_size=8, max_new_tokens=16, eval_every=0, sample_every=0, checkpoint_every=1)
    return train(load_policy(tiny, trainable=True), load_tokenizer(tiny), rm, prompts,
                 RLConfig(**{**settings, **cfg}), eval_prompts=eval_prompts, out=d / OUT, progress=False,
                 eval_batch_size=eval_batch_size, resume=resume)


def _nan_reward_model():
    from b2b.models import load_reward_model
    import torch

    rm = load_reward_model(_data_dir() / "rm-level1")
    with torch.no_grad():
        rm.score.weight.fill_(float("nan"))
    return rm


def _nan_from_step_3():
    """A reward function that returns NaN from its third call (the third step) on."""
    calls = []

    def reward(prompts, texts, finished):
        calls.append(1)
        return [float("nan") if len(calls) >= 3 else 1.0] * len(texts)
    return reward


@contextlib.contextmanager
def out_of_memory(module: str, name: str):
    """Make `module.name` raise CUDA's out-of-memory error (what a too-big batch does on a GPU)."""
    import importlib

    import torch

    mod = importlib.import_module(module)
    real = getattr(mod, name)

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    setattr(mod, name, oom)
    try:
        yield
    finally:
        setattr(mod, name, real)


@contextlib.contextmanager
def _small_gpu():
    """A 1 MB "GPU": what `b2b.memory.check_fits` compares a run's estimate with."""
    import b2b.memory as memory

    real = memory.device_memory
    memory.device_memory = lambda device: 1_000_000
    try:
        yield
    finally:
        memory.device_memory = real


def _evaluate_long_prompt(d: Path):
    from b2b import evaluate_policy, load_policy, load_tokenizer

    tiny = _data_dir() / "tiny-sft"
    return evaluate_policy(load_policy(tiny), load_tokenizer(tiny), PROMPTS + [LONG_PROMPT], max_new_tokens=64)


def _load_tokenizer(name: str) -> Callable[[Path], object]:
    def call(d: Path):
        from b2b.models import load_tokenizer
        return load_tokenizer(d / name)
    return call


# ----------------------------------------------------------------------------- the table

def _data_cases() -> list[Case]:
    """Preference data, JSONL and CSV: each through `b2b run --data FILE` and `load_preferences(FILE)`."""
    jsonl = [
        ("jsonl-missing-field", "a JSONL row without a `rejected` field", _row(rejected=None),
         "line 2: missing field 'rejected'", "give every row `prompt`, `chosen` and `rejected`"),
        ("jsonl-empty-prompt", "an empty prompt", _row(prompt="  "),
         "line 2: field 'prompt': expected non-empty text", "drop the row or fill in the prompt"),
        ("jsonl-non-string", "a prompt that is a number, not text", _row(prompt=3),
         "field 'prompt': expected non-empty text, got int", "quote the text: `\"prompt\": \"3\"`"),
        ("jsonl-empty-response", "an empty response", _row(chosen=" "),
         "field 'chosen': expected a non-empty response", "drop the row: an empty answer teaches nothing"),
        ("jsonl-rating-text", "a rating that is not a number", _row(chosen_rating="high"),
         "field 'chosen_rating': expected a number in [0, 10], got 'high'", "use numbers (or leave ratings out)"),
        ("jsonl-rating-range", "a rating out of range", _row(rejected_rating=11),
         "field 'rejected_rating': expected a number in [0, 10], got 11", "rescale ratings into [0, 10]"),
        ("jsonl-same-responses", "chosen and rejected are the same text", _row(rejected=GOOD["chosen"]),
         "fields 'chosen'/'rejected': expected two different responses", "drop ties: they carry no preference"),
        ("jsonl-wrong-role", "a chat message with an unknown role",
         _row(chosen=_turns(("user", "Hi!"), ("bot", "Hello!"))),
         "field 'chosen[1].role': expected one of system, user, assistant, got 'bot'",
         "use the roles system, user and assistant"),
        ("jsonl-no-assistant-turn", "a conversation that does not end with the assistant's answer",
         _row(rejected=_turns(("assistant", "Bye."), ("user", "Hi!"))),
         "field 'rejected': expected a list of chat messages ending with an assistant turn",
         "end `chosen` and `rejected` with the assistant turn being compared"),
        ("jsonl-no-user-turn", "a conversation without a user turn", _row(rejected=_turns(("assistant", "Bye."))),
         "field 'rejected': expected a user turn before the assistant turn", "start with the user's message"),
        ("jsonl-bad-json", "a line that is not JSON", '{"prompt": "Hi!", ',
         "line 2: expected one JSON object per line", "one complete JSON object per line (JSON Lines)"),
        ("jsonl-not-an-object", "a line that is a JSON list, not an object", "[1, 2]",
         "line 2: expected an object with fields prompt, chosen, rejected", "one object per line"),
    ]
    cases = [Case(cid, symptom, DataError, frag, fix, setup=_jsonl("prefs.jsonl", row), cli=_run_data("prefs.jsonl"),
                  api=_load("prefs.jsonl")) for cid, symptom, row, frag, fix in jsonl]
    files = [
        ("jsonl-not-utf8", "a JSONL file that is not UTF-8 (e.g. Latin-1 from a spreadsheet)", "prefs.jsonl",
         json.dumps(GOOD).encode() + b'\n{"prompt": "caf\xe9"}\n', "line 2: expected UTF-8 text",
         "re-save the file as UTF-8"),
        ("jsonl-empty-file", "an empty JSONL file", "prefs.jsonl", b"\n", "empty file",
         "point --data at the file with the pairs"),
        ("csv-missing-column", "a CSV with the seed's columns named differently", "prefs.csv",
         b"prompt,answer_a,answer_b\nHi!,Hello!,Bye.\n", "missing column 'chosen'",
         "name the columns prompt, chosen, rejected (ratings optional)"),
        ("csv-empty-response", "a CSV row with an empty response cell", "prefs.csv",
         (CSV_HEAD + CSV_GOOD + "Hey,,Go away.,,\n").encode(), "line 3: field 'chosen': expected a non-empty response",
         "drop the row or fill in the response"),
        ("csv-rating-text", "a CSV rating that is not a number", "prefs.csv",
         (CSV_HEAD + "Hi!,Hello!,No.,lots,2\n").encode(),
         "line 2: field 'chosen_rating': expected a number, got 'lots'",
         "use numbers (blank for none)"),
        ("csv-rating-range", "a CSV rating out of range", "prefs.csv",
         (CSV_HEAD + "Hi!,Hello!,No.,42,2\n").encode(), "line 2: field 'chosen_rating': expected a number in [0, 10]",
         "rescale ratings into [0, 10]"),
        ("csv-same-responses", "a CSV row whose chosen and rejected cells are equal", "prefs.csv",
         (CSV_HEAD + CSV_GOOD + "Hey,Same.,Same.,,\n").encode(), "line 3: fields 'chosen'/'rejected'",
         "drop ties: they carry no preference"),
        ("csv-not-utf8", "a CSV saved as Latin-1", "prefs.csv", (CSV_HEAD + "caf\xe9,Yes.,No.,,\n").encode("latin-1"),
         "expected UTF-8 text", "re-save the file as UTF-8"),
        ("csv-empty-file", "an empty CSV file", "prefs.csv", b"", "empty file (expected a header line",
         "point --data at the file with the pairs"),
        ("csv-header-only", "a CSV with a header and no rows", "prefs.csv", CSV_HEAD.encode(),
         "no rows after the header", "add the pairs"),
    ]
    cases += [Case(cid, symptom, DataError, frag, fix, setup=_bytes(name, data), cli=_run_data(name), api=_load(name))
              for cid, symptom, name, data, frag, fix in files]
    cases.append(Case("data-not-found", "`--data` names a file that does not exist", DataError,
                      "missing.jsonl: file not found", "check the path (relative to where you run b2b)",
                      cli=_run_data("missing.jsonl"), api=_load("missing.jsonl")))
    return cases


def _prompt_cases() -> list[Case]:
    """Prompts that, with the completion after them, do not fit the policy's context."""
    shorten = "shorten or drop the prompt, or lower max_new_tokens"
    return [
        Case("prompt-too-long", "a prompt longer than the policy's context allows (256 tokens for the tiny "
             "policy, minus max_new_tokens)", DataError,
             "prefs.jsonl: line 2: field 'prompt': expected at most 192 tokens", shorten,
             setup=_jsonl("prefs.jsonl", _row(prompt=LONG_PROMPT, chosen="Yes.", rejected="No.")),
             cli=_run_data("prefs.jsonl")),
        Case("prompt-too-long-train", "the same, in a notebook's `train(...)` (16 new tokens)", DataError,
             "prompt 4: field 'prompt': expected at most 240 tokens", shorten,
             api=lambda d: tiny_train(d, prompts=PROMPTS + [LONG_PROMPT])),
        Case("prompt-too-long-evaluate", "the same, in `evaluate_policy(...)`", DataError,
             "prompt 4: field 'prompt': expected at most 192 tokens", shorten,
             api=_evaluate_long_prompt),
        Case("max-new-tokens-too-big", "`max_new_tokens` as long as the whole context", ConfigError,
             "field 'max_new_tokens': expected fewer than the policy's context of 256",
             "lower max_new_tokens (the tiny policy: 64)",
             setup=lambda d: _file(d, "c.yaml", "max_new_tokens: 300\n"),
             cli=lambda d: _run(d, "--skip-reward-training", "--config", d / "c.yaml")),
    ]


def _config_cases() -> list[Case]:
    """Settings: a config file and the command line's flags (checked by `RLConfig.validate`)."""
    def config(text):
        return lambda d: _file(d, "c.yaml", text)

    with_config = lambda d: _run(d, "--config", d / "c.yaml")  # noqa: E731
    return [
        Case("config-unknown-key", "a misspelt key in a `--config` file", ConfigError, "unknown key 'stepz'",
             "use a field of b2b.rl_config.RLConfig (reward-model ones under `reward:`)", setup=config("stepz: 3\n"),
             cli=with_config),
        Case("config-wrong-type", "a config value of the wrong type", ConfigError, "key 'steps': expected int",
             "write a number", setup=config("steps: three\n"), cli=with_config),
        Case("config-bad-yaml", "a config file that is not valid YAML", ConfigError, "not valid YAML",
             "fix the YAML (a mapping of keys to values)", setup=config("steps: [1,\n"), cli=with_config),
        Case("config-not-found", "`--config` names a missing file", ConfigError, "c.yaml: config file not found",
             "check the path", cli=with_config),
        Case("config-reward-field", "a reward-model setting that must be positive is 0", ConfigError,
             "field 'reward.batch_size': expected a positive number", "use a positive batch size",
             setup=config("reward:\n  batch_size: 0\n"), cli=with_config),
        Case("negative-lr", "a negative learning rate", ConfigError, "field 'lr': expected a positive number",
             "a small positive lr (tiny: 2e-4; SmolLM2: 1e-6)", cli=lambda d: _run(d, "--lr", "-0.001")),
        Case("zero-batch", "a batch size of 0", ConfigError, "field 'batch_size': expected a positive number",
             "a positive batch size", cli=lambda d: _run(d, "--batch-size", "0")),
        Case("rloo-k-1", "RLOO with one sample per prompt", ConfigError, "field 'k': rloo needs k >= 2",
             "--k 2 or more: the baseline is the other samples' mean",
             cli=lambda d: _run(d, "--algo", "rloo", "--k", "1")),
        Case("batch-not-multiple-of-k", "a batch that does not split into groups of k", ConfigError,
             "field 'batch_size': 8 rollouts do not split into groups of k=3", "a batch size that is a multiple of k",
             cli=lambda d: _run(d, "--algo", "rloo", "--k", "3", "--batch-size", "8")),
        Case("config-notebook", "a bad setting in a notebook's `RLConfig`", ConfigError,
             "field 'kl_coef': expected a number >= 0", "kl_coef >= 0 (0: no KL penalty)",
             api=lambda d: tiny_train(d, kl_coef=-0.1)),
        Case("unknown-profile", "an unknown `--profile`", ConfigError,
             "profile: expected one of ci, tiny, colab, colab-smoke, tiny-smollm2, tiny-smollm2-smoke",
             "ci, tiny, colab, colab-smoke, tiny-smollm2 or tiny-smollm2-smoke", cli=lambda d: ["run", "--profile", "big", "--out", str(d / OUT)]),
    ]


def _model_cases() -> list[Case]:
    """Model directories and their tokenizers."""
    return [
        Case("model-dir-missing", "a policy path that does not exist", ModelError, "missing: model directory not found",
             "a save_pretrained folder, or a hub id like HuggingFaceTB/SmolLM2-135M-Instruct",
             cli=_evaluate("--policy", "{d}/missing")),
        Case("model-no-config", "a folder that is not a saved model", ModelError, "no config.json in this folder",
             "point at the folder save_pretrained wrote", setup=lambda d: (d / "empty").mkdir(),
             cli=_evaluate("--policy", "{d}/empty")),
        Case("model-no-tokenizer", "a model folder without tokenizer files", ModelError, "cannot load a tokenizer",
             "save the tokenizer next to the model (tokenizer.save_pretrained(folder))",
             setup=lambda d: _copy_tiny(d, "notok", drop=("tokenizer.json", "tokenizer_config.json")),
             cli=_evaluate("--policy", "{d}/notok")),
        Case("model-bad-weights", "weights that are not a safetensors file (or are cut short)", ModelError,
             "cannot load model weights", "re-save with save_pretrained (safetensors); b2b never unpickles .bin files",
             setup=lambda d: _copy_tiny(d, "broken", garble=("model.safetensors",)),
             cli=_evaluate("--policy", "{d}/broken")),
        Case("reward-model-missing", "a reward-model path that does not exist", ModelError,
             "rm: model directory not found", "the folder `b2b run --only-reward-model --out` wrote",
             cli=_evaluate("--policy", _data_dir() / "tiny-sft", "--reward-model", "{d}/rm")),
    ]


def _training_cases() -> list[Case]:
    """Numerical faults and running out of GPU memory: training stops at the step, naming it."""
    return [
        Case("nan-reward-model", "a reward model that returns NaN", TrainingError, "step 1: reward is not finite",
             "check the reward model (a NaN weight, an fp16 overflow); retrain or reload it",
             api=lambda d: tiny_train(d, reward=_nan_reward_model()), output="run"),
        Case("nan-reward-later", "the reward turns NaN in the middle of a run", TrainingError,
             "step 3: reward is not finite (NaN or inf); training stopped, the policy was not updated; last good "
             "checkpoint:", "fix the reward, then --resume from the checkpoint named",
             api=lambda d: tiny_train(d, reward=_nan_from_step_3(), steps=4), output="run"),
        Case("lr-far-too-high", "a learning rate far too high (1e10): the weights overflow", TrainingError,
             "step 2: sampling distribution is not finite", "lower --lr (tiny: 2e-4) and start over (--overwrite)",
             setup=lambda d: _file(d, "c.yaml", "checkpoint_every: 1\neval_every: 0\nmax_new_tokens: 16\n"),
             cli=lambda d: _run(d, "--skip-reward-training", "--steps", "3", "--batch-size", "8", "--lr", "1e10",
                                "--config", d / "c.yaml"), output="run"),
        Case("oom-step", "CUDA out of memory in an RL step (colab profile)", TrainingError,
             "step 1: out of GPU memory in the RL step with batch_size 8",
             "the batch size suggested (--batch-size, RLConfig.batch_size), then --resume / resume= from the "
             "checkpoint named", api=tiny_train, patch=lambda: out_of_memory("b2b.train", "rl_step"), output="run"),
        Case("too-big-for-the-gpu", "a run that clearly cannot fit the GPU (its memory estimate is over 1.25x the GPU's)",
             ConfigError, "the RL step (8 rollouts of up to",
             "the setting it names (RLConfig.gradient_checkpointing, a smaller batch_size or max_new_tokens); "
             "the colab recipes are sized by the measured T4 table (docs/performance.md#memory)",
             api=tiny_train, patch=lambda: _small_gpu()),
        Case("oom-evaluation", "CUDA out of memory in a held-out evaluation", TrainingError,
             "step 0: out of GPU memory in the held-out evaluation with eval_batch_size 8",
             "a smaller eval_batch_size (train's argument) or fewer eval_prompts",
             api=lambda d: tiny_train(d, eval_prompts=PROMPTS * 2, eval_batch_size=8),
             patch=lambda: out_of_memory("b2b.evaluate", "evaluate_step"), output="run"),
        Case("oom-reward-model", "CUDA out of memory training a reward model", TrainingError,
             "reward model: out of GPU memory with batch_size 32",
             "the setting suggested under reward: in --config (gradient_checkpointing, micro_batch_size: the same gradient in smaller passes)",
             setup=_jsonl("prefs.jsonl", _row(prompt="Hey", chosen="Yes.", rejected="No.")),
             cli=lambda d: _run(d, "--only-reward-model", "--data", d / "prefs.jsonl"),
             patch=lambda: out_of_memory("b2b.reward", "train_reward_model")),
    ]


def _run_dir_cases() -> list[Case]:
    """Run directories: an earlier run or model is never overwritten without --overwrite."""
    return [
        Case("out-holds-run", "`--out` already holds another run", ConfigError,
             "already holds a run (checkpoints, metrics.jsonl)", "--resume DIR continues it, --overwrite starts over",
             setup=_fake_run, cli=lambda d: _run(d, "--skip-reward-training")),
        Case("out-holds-model", "`--out` holds a saved reward model", ConfigError,
             "already holds a model (config.json, model.safetensors)", "choose another --out (or --overwrite)",
             setup=_fake_model, cli=lambda d: _run(d)),
        Case("reward-model-out-taken", "`--only-reward-model` into a folder that holds a model", ConfigError,
             "already holds a model (config.json, model.safetensors)", "choose another --out (or --overwrite)",
             setup=_fake_model, cli=lambda d: _run(d, "--only-reward-model")),
        Case("notebook-out-holds-run", "a notebook's `train(out=...)` into an earlier run", ConfigError,
             "already holds a run (checkpoints, metrics.jsonl)", "resume=DIR continues it, overwrite=True starts over",
             setup=_fake_run, api=tiny_train),
        Case("resume-nothing", "`--resume` a folder without checkpoints", ConfigError, "no checkpoint found",
             "--resume the run directory itself (it holds checkpoints/step-N)",
             setup=lambda d: (d / OUT).mkdir(parents=True),
             cli=lambda d: ["run", "--profile", "ci", "--resume", str(d / OUT)]),
        Case("resume-other-reward-model", "a notebook's `train(resume=...)` with another reward model than the run's",
             ConfigError, "trained against another reward model",
             "resume with the reward model the run trained against (its reward_model.json), or overwrite=True starts over",
             setup=lambda d: (_fake_run(d), _file(d / OUT, "reward_model.json", '{"fingerprint": "0123456789abcdef"}\n')),
             api=lambda d: tiny_train(d, resume=d / OUT)),
        Case("exclusive-flags", "`--only-reward-model` together with `--skip-reward-training`", ConfigError,
             "exclude each other", "drop one of them", cli=lambda d: _run(d, "--only-reward-model",
                                                                         "--skip-reward-training")),
    ]


def cases() -> list[Case]:
    """The whole table, in docs/troubleshooting.md's order."""
    return _data_cases() + _prompt_cases() + _config_cases() + _model_cases() + _training_cases() + _run_dir_cases()


# ----------------------------------------------------------------------------- running

def _snapshot(d: Path) -> dict[str, tuple]:
    return {str(p.relative_to(d)): (p.is_dir(), None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns))
            for p in d.rglob("*")}


def _changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def run_case(case: Case, d: Path, via: str) -> Outcome:
    """Set the case up in the (empty) directory `d` and trigger it one way: "cli" or "api"."""
    d.mkdir(parents=True, exist_ok=True)
    case.setup(d)
    before = _snapshot(d)
    if via == "cli":
        from b2b.tools.cli import main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), case.patch():
            try:
                code, kind, message = main(case.cli(d)), None, ""
            except Exception as e:  # not a B2BError: recorded, so a test says which
                code, kind, message = None, type(e).__name__, str(e)
        text = err.getvalue().strip()
        if code is not None:
            message = text.removeprefix("error: ")
        return Outcome(case, via, kind, message, len(text.splitlines()), code, _changed(before, _snapshot(d)), text)
    try:
        with case.patch():
            case.api(d)
        kind, message = None, ""
    except Exception as e:
        kind, message = type(e).__name__, str(e)
    return Outcome(case, via, kind, message, len(message.splitlines()), None, _changed(before, _snapshot(d)))


def run_all(root: Path, table: list[Case] | None = None) -> list[Outcome]:
    """Every case, every way it has, each in its own directory under `root`."""
    outcomes = []
    for case in table or cases():
        for via in ("cli", "api"):
            if getattr(case, via) is not None:
                outcomes.append(run_case(case, Path(root) / f"{case.id}-{via}", via))
    return outcomes


# ----------------------------------------------------------------------------- the troubleshooting page

def neutral(message: str, d: Path) -> str:
    """`message` with this machine's paths made relative: the scratch directory and the data folder."""
    for base, short in ((Path(d), ""), (_data_dir(), "data/")):
        for b in dict.fromkeys((str(base), str(base.resolve()))):
            message = message.replace(b + os.sep, short).replace(b, short.rstrip("/") or ".")
    return message


def markdown(outcomes: list[Outcome] | None = None, root: Path | None = None) -> str:
    """The troubleshooting table, symptom | message | fix, from the messages the cases really
    produce (run now, in a temporary directory, unless `outcomes` are given with their `root`)."""
    import tempfile

    if outcomes is None:
        with tempfile.TemporaryDirectory() as tmp:
            return markdown(run_all(Path(tmp)), Path(tmp))
    first = {}
    for o in outcomes:  # the command line's message where a case has one: what a user sees
        first.setdefault(o.case.id, o)
    rows = ["| symptom | message | fix |", "|---|---|---|"]
    for o in first.values():
        where = Path(root) / f"{o.case.id}-{o.via}"
        shown = ("error: " if o.via == "cli" else f"{o.error}: ") + neutral(o.message, where)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in
                                      (o.case.symptom, f"`{shown}`", o.case.fix)) + " |")
    return "\n".join(rows)


def section(text: str) -> str:
    """The part of a page (docs/troubleshooting.md) between the troubleshooting markers."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip("\n")


def write_readme(path: str | Path, table: str | None = None) -> None:
    """Replace a page's troubleshooting section (docs/troubleshooting.md) with a freshly rendered table."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    start, end = text.index(START) + len(START), text.index(END)
    p.write_text(text[:start] + "\n" + (table or markdown()) + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m b2b.tools.troubleshooting", description=__doc__.splitlines()[0])
    ap.add_argument("--write", metavar="PAGE", default=None, help="rewrite the section in this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # keep the output to the table
    if args.write:
        write_readme(args.write)
        print(f"{args.write}: troubleshooting section rewritten ({len(cases())} cases)")
    else:
        print(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
