"""SNLI jsonl and GloVe text loaders on the shipped sample and on files written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bibench.data.glove import read_glove
from bibench.data.snli import LABELS, read_snli
from bibench.errors import UserError

SAMPLE = Path(__file__).parent / "snli_sample"
GLOVE = Path(__file__).parent / "glove_sample.4d.txt"


def _expected(split: str) -> list[tuple[list[str], list[str], int]]:
    """Gold-labelled rows of the sample, tokenised by hand (the sample's sentences are
    words separated by spaces and one final period)."""
    rows = [json.loads(line) for line in (SAMPLE / f"snli_1.0_{split}.jsonl").open()]
    words = lambda s: [*s.rstrip(".").split(), "."]  # noqa: E731
    return [
        (words(r["sentence1"]), words(r["sentence2"]), LABELS[r["gold_label"]])
        for r in rows
        if r["gold_label"] != "-"
    ]


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_reader_returns_tokens_and_labels_and_skips_unlabelled_pairs(split):
    pairs = read_snli(SAMPLE, split)
    expected = _expected(split)
    assert pairs.premises == [e[0] for e in expected]
    assert pairs.hypotheses == [e[1] for e in expected]
    assert pairs.labels.tolist() == [e[2] for e in expected]
    assert pairs.labels.dtype == torch.int64
    n_lines = sum(1 for _ in (SAMPLE / f"snli_1.0_{split}.jsonl").open())
    assert len(pairs) == n_lines - (split == "train")  # one '-' pair in train


def test_limit_keeps_the_first_pairs_in_file_order():
    assert read_snli(SAMPLE, "train", limit=5).premises == read_snli(SAMPLE, "train").premises[:5]
    with pytest.raises(UserError, match="fewer than 100"):
        read_snli(SAMPLE, "train", limit=100)


def test_missing_files_name_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as err:
        read_snli(tmp_path, "dev")
    msg = str(err.value)
    assert "snli_1.0_dev.jsonl" in msg and "https://nlp.stanford.edu/projects/snli/" in msg
    assert "\n" not in msg
    with pytest.raises(UserError) as err:
        read_glove(tmp_path / "glove.840B.300d.txt", ["a"])
    msg = str(err.value)
    assert "glove.840B.300d.txt" in msg and "https://nlp.stanford.edu/projects/glove/" in msg


def test_malformed_line_is_one_error_naming_the_line(tmp_path):
    (tmp_path / "snli_1.0_test.jsonl").write_text('{"gold_label": "neutral"}\n')
    with pytest.raises(UserError, match=r"snli_1.0_test.jsonl:1"):
        read_snli(tmp_path, "test")


def test_glove_reader_oov_case_fallback_duplicates_and_multiword_entries(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text(
        "the 0.1 0.2 0.3\n"
        ". . . 9 9 9\n"  # a 'word' with spaces: skipped
        ". 1 2 3\n"
        "Man 4 5 6\n"
        "man 7 8 9\n"
        "man 0 0 0\n"  # a duplicate: the first vector wins
        "unused 1 1 1\n"
    )
    emb = read_glove(path, ["The", ".", "man", "Man", "zebra"])
    assert emb.dim == 3 and "unused" not in emb.index  # only the dataset's words are kept
    vec = lambda tok: emb.vectors[emb.lookup(tok)].tolist()  # noqa: E731
    assert vec("The") == [0.1, 0.2, 0.3]  # lower-case fallback
    assert vec(".") == [1.0, 2.0, 3.0]
    assert vec("Man") == [4.0, 5.0, 6.0] and vec("man") == [7.0, 8.0, 9.0]
    assert emb.lookup("zebra") is None
    ids, lengths = emb.ids([["The", "zebra", "man", "."], ["zebra"], ["Man"]])
    assert lengths.tolist() == [3, 1, 1]  # OOV dropped; an all-OOV sentence keeps one step
    assert ids.shape == (3, 3)
    assert emb.vectors[ids[0]].tolist() == [[0.1, 0.2, 0.3], [7.0, 8.0, 9.0], [1.0, 2.0, 3.0]]
    assert ids[1].tolist() == [0, 0, 0] and emb.vectors[0].abs().sum() == 0  # zero vector
    assert ids[2, 1:].tolist() == [0, 0]  # padding


def test_shipped_glove_sample_covers_the_sample_except_the_oov_word():
    vocab = {w for s in ("train", "dev", "test") for e in _expected(s) for w in e[0] + e[1]}
    emb = read_glove(GLOVE, vocab)
    missing = {w for w in vocab if emb.lookup(w) is None}
    assert missing == {"zebra"}
    assert emb.vectors[emb.lookup("man")].abs().max() < 9  # the duplicate 9.0 line lost
