import json

import pytest

from b2b.tinyworld.build_data import N_TEST_PAIRS, N_TRAIN_PAIRS, check_data, write_data
from b2b.data import HELPSTEER2, load_preferences, load_prompts, split_prompts, validate_pair
from b2b.errors import DataError

GOOD = {"prompt": "Hi!", "chosen": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Bye."}],
        "chosen_rating": 7.5, "rejected_rating": 2.0}


def test_shipped_data_matches_the_generator(data_dir):
    assert check_data(data_dir) == []


def test_shipped_data_sizes_and_splits(data_dir):
    train = load_preferences(data_dir, "train")
    test = load_preferences(data_dir, "test")
    assert len(train) >= 20_000 and len(train) == N_TRAIN_PAIRS
    assert len(test) >= 2_000 and len(test) == N_TEST_PAIRS
    test_prompts = set(load_prompts(data_dir, "test"))
    train_prompts = set(load_prompts(data_dir, "train"))
    assert not test_prompts & train_prompts
    assert {p["prompt"] for p in test} <= test_prompts
    assert {p["prompt"] for p in train} <= train_prompts
    sft = [json.loads(line) for line in (data_dir / "sft.jsonl").open()]
    assert {r["prompt"] for r in sft} <= train_prompts
    assert all(p["chosen_rating"] > p["rejected_rating"] for p in train[:2000])


def test_helpsteer2_schema_exactly(data_dir):
    import gzip

    row = json.loads(gzip.open(data_dir / "prefs_train.jsonl.gz", "rt").readline())
    assert sorted(row) == ["chosen", "chosen_rating", "prompt", "rejected", "rejected_rating"]
    assert [m["role"] for m in row["chosen"]] == ["user", "assistant"]
    assert row["chosen"][0]["content"] == row["prompt"]


def test_check_detects_a_changed_file(tmp_path, data_dir):
    for name in ("prefs_train.jsonl.gz", "prefs_test.jsonl", "sft.jsonl", "prompts_train.jsonl", "prompts_test.jsonl"):
        (tmp_path / name).write_bytes((data_dir / name).read_bytes())
    assert check_data(tmp_path) == []
    lines = (tmp_path / "prefs_test.jsonl").read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace('"chosen_rating":', '"chosen_rating": 1.0, "x":')
    (tmp_path / "prefs_test.jsonl").write_text("".join(lines))
    (tmp_path / "sft.jsonl").unlink()
    assert check_data(tmp_path) == ["prefs_test.jsonl", "sft.jsonl"]


def _write(tmp_path, rows, name="p.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return p


def _bad(**change):
    row = json.loads(json.dumps(GOOD))
    for k, v in change.items():
        if v is KeyError:
            del row[k]
        else:
            row[k] = v
    return row


CASES = [
    (_bad(prompt=KeyError), "missing field 'prompt'"),
    (_bad(rejected=KeyError), "missing field 'rejected'"),
    (_bad(prompt="  "), "field 'prompt': expected non-empty text"),
    (_bad(prompt=3), "field 'prompt': expected non-empty text, got int"),
    (_bad(chosen="  "), "field 'chosen': expected a non-empty response"),
    (_bad(chosen=7), "field 'chosen': expected a list of chat messages"),
    (_bad(rejected=GOOD["chosen"]), "fields 'chosen'/'rejected': expected two different responses"),
    (_bad(chosen=[]), "field 'chosen': expected a list of chat messages"),
    (_bad(chosen=[{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": ""}]), "field 'chosen[1].content': expected non-empty text"),
    (_bad(chosen=[{"role": "user", "content": "Hi!"}, {"role": "bot", "content": "Hey"}]), "field 'chosen[1].role': expected one of system, user, assistant"),
    (_bad(rejected=[{"role": "assistant", "content": "Hey"}, {"role": "user", "content": "Hi!"}]), "field 'rejected': expected a list of chat messages ending with an assistant turn, but the last role is 'user'"),
    (_bad(rejected=[{"role": "assistant", "content": "Hey"}]), "field 'rejected': expected a user turn"),
    (_bad(rejected=[{"role": "user", "content": "Other"}, {"role": "assistant", "content": "Hey"}]), "the same conversation"),
    (_bad(chosen_rating=11), "field 'chosen_rating': expected a number in [0, 10], got 11"),
    (_bad(rejected_rating=-1), "field 'rejected_rating': expected a number in [0, 10]"),
    (_bad(rejected_rating="high"), "field 'rejected_rating': expected a number in [0, 10], got 'high'"),
    (_bad(chosen_rating=float("nan")), "field 'chosen_rating': expected a number"),
    ("[1, 2]", "expected an object with fields"),
    ('{"prompt": "Hi!", ', "line 2: expected one JSON object per line"),
]


@pytest.mark.parametrize("row,message", CASES, ids=[m[:40] for _, m in CASES])
def test_bad_rows_give_one_line_errors_naming_line_and_field(tmp_path, row, message):
    path = _write(tmp_path, [GOOD, row])
    with pytest.raises(DataError) as e:
        load_preferences(path)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: line 2")
    assert message in text


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty file"):
        load_preferences(tmp_path / "empty.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"line 2: expected UTF-8 text"):
        load_preferences(tmp_path / "latin.jsonl")


def test_good_rows_and_missing_ratings_are_accepted(tmp_path):
    row = _bad(chosen_rating=KeyError, rejected_rating=KeyError)
    out = load_preferences(_write(tmp_path, [GOOD, row]))
    assert out[0]["chosen_rating"] == 7.5 and out[1]["chosen_rating"] is None
    assert validate_pair(GOOD, "x") == {**GOOD}


def test_hub_dataset_path_uses_datasets_with_a_local_stand_in(monkeypatch, data_dir):
    """The colab profile's HelpSteer2 path: same loader, `datasets.load_dataset` underneath."""
    import datasets

    rows = [json.loads(line) for line in (data_dir / "prefs_test.jsonl").open()][:50]
    calls = []

    def fake_load_dataset(name, split=None, **kw):
        calls.append((name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs = load_preferences(HELPSTEER2, split="average_rating")
    assert calls == [(HELPSTEER2, "average_rating")]
    assert len(pairs) == 50 and pairs[0]["prompt"] == rows[0]["prompt"]
    rows[7]["chosen_rating"] = 42
    with pytest.raises(DataError, match=r"original_HelpSteer2_binarized \[average_rating\]: row 7: field 'chosen_rating'"):
        load_preferences(HELPSTEER2, split="average_rating")
    split = split_prompts(pairs, test_fraction=0.3)
    assert set(split["train"]).isdisjoint(split["test"]) and split["test"]


def test_write_data_roundtrip_is_deterministic(tmp_path, monkeypatch):
    import b2b.tinyworld.build_data as bd

    monkeypatch.setattr(bd, "N_TRAIN_PAIRS", 30)
    monkeypatch.setattr(bd, "N_TEST_PAIRS", 10)
    monkeypatch.setattr(bd, "N_SFT", 20)
    write_data(tmp_path)
    assert check_data(tmp_path) == []
    assert len(load_preferences(tmp_path, "train")) == 30
    assert len(load_preferences(tmp_path / "prefs_train.jsonl.gz")) == 30  # a gzipped file directly


def test_plain_string_responses_and_csv_files(tmp_path):
    row = {"prompt": "Hi!", "chosen": "Hello! How can I help?", "rejected": "Go away.", "chosen_rating": 3}
    out = load_preferences(_write(tmp_path, [row]))[0]
    assert out["chosen"] == [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    assert out["chosen_rating"] == 3.0 and out["rejected_rating"] is None
    import csv
    path = tmp_path / "prefs.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "chosen", "rejected", "chosen_rating", "rejected_rating"])
        w.writerow(["Hi!", "Hello, with a comma\nand a new line.", "No.", "3.5", ""])
        w.writerow(["Hey", json.dumps(GOOD["chosen"]), json.dumps(GOOD["rejected"]), "", ""])
    rows = load_preferences(path)
    assert rows[0]["chosen"][-1]["content"] == "Hello, with a comma\nand a new line." and rows[0]["chosen_rating"] == 3.5
    assert rows[1]["chosen"] == GOOD["chosen"]
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,chosen,rejected,chosen_rating\nHi!,Hello,No,lots\n")
    with pytest.raises(DataError, match=r"bad.csv: line 2: field 'chosen_rating': expected a number, got 'lots'"):
        load_preferences(bad)
    bad.write_text("prompt,answer_a,answer_b\nHi!,a,b\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column 'chosen' \(expected columns prompt, chosen, rejected"):
        load_preferences(bad)
    bad.write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_preferences(bad)


def test_a_profiles_prompt_cap_keeps_only_prompts_that_short():
    """`Profile.max_prompt_chars` (colab-smoke: 120) caps the training and held-out prompts sampled from
    hub-style data; without it the cap is `MAX_PROMPT_CHARS`."""
    import dataclasses

    from b2b.config import SMOKE_DATA, data_dir, get_profile
    from b2b.data import MAX_PROMPT_CHARS, heldout_prompts, prompt_chars, rl_prompts

    hub = dataclasses.replace(get_profile("ci"), world=False, preferences=str(data_dir() / SMOKE_DATA),
                              preferences_split=None, eval_prompts=50)
    assert prompt_chars(hub) == MAX_PROMPT_CHARS
    train, test, world = rl_prompts(hub)
    assert not world and max(map(len, train)) > 120
    short = dataclasses.replace(hub, max_prompt_chars=120)
    s_train, s_test, _ = rl_prompts(short)
    assert s_train == [p for p in train if len(p) <= 120] and s_test == [p for p in test if len(p) <= 120]
    assert heldout_prompts(short) == [p for p in heldout_prompts(hub) if len(p) <= 120] and s_test
