"""SNLI 1.0 in its official jsonl format (https://nlp.stanford.edu/projects/snli/).

The official zip unpacks to ``snli_1.0/`` holding ``snli_1.0_{train,dev,test}.jsonl``;
``data_dir`` is that folder. One JSON object per line; the fields used are
``sentence1`` (premise), ``sentence2`` (hypothesis), their ``*_binary_parse`` and
``gold_label``. Pairs whose ``gold_label`` is ``-`` (no annotator majority) are skipped,
as in every SNLI benchmark. Labels: entailment = 0, neutral = 1, contradiction = 2 (the
UniBiO code's map).

Tokens come from the binary parse (the official PTB tokenisation: drop the brackets);
where a line has no parse, from a regex split into words and punctuation. Case is kept
(GloVe 840B is cased); :mod:`bibench.data.glove` falls back to lower case.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from bibench.errors import UserError

__all__ = ["LABELS", "SNLI_URL", "NLIPairs", "read_snli", "snli_path", "tokenize"]

SNLI_URL = "https://nlp.stanford.edu/projects/snli/"
LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
SPLITS = ("train", "dev", "test")
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclasses.dataclass(frozen=True)
class NLIPairs:
    """Tokenised premise/hypothesis pairs with int64 labels ``(n,)``."""

    premises: list[list[str]]
    hypotheses: list[list[str]]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.premises)


def snli_path(data_dir: str | Path, split: str) -> Path:
    """The jsonl file of ``split`` (train, dev or test); a missing file is a UserError."""
    if split not in SPLITS:
        raise ValueError(f"unknown SNLI split '{split}' (known: {', '.join(SPLITS)})")
    path = Path(data_dir).expanduser() / f"snli_1.0_{split}.jsonl"
    if not path.is_file():
        raise UserError(
            f"SNLI file not found: {path} (download SNLI 1.0 from {SNLI_URL} and unzip it; "
            "data_dir is the snli_1.0 folder)"
        )
    return path


def tokenize(text: str, binary_parse: str | None = None) -> list[str]:
    """Tokens of a sentence: the leaves of its binary parse if given, else a regex split."""
    if binary_parse:
        return [t for t in binary_parse.split() if t not in ("(", ")")]
    return _WORD.findall(text)


def read_snli(data_dir: str | Path, split: str, limit: int = 0) -> NLIPairs:
    """The first ``limit`` gold-labelled pairs of ``split`` in file order (all if 0)."""
    path = snli_path(data_dir, split)
    premises, hypotheses, labels = [], [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if limit and len(labels) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                gold = row["gold_label"]
                s1, s2 = row["sentence1"], row["sentence2"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UserError(f"malformed SNLI line {path}:{lineno}: {exc}") from None
            if gold == "-":
                continue
            if gold not in LABELS:
                raise UserError(f"unknown gold_label {gold!r} at {path}:{lineno}")
            premises.append(tokenize(s1, row.get("sentence1_binary_parse")))
            hypotheses.append(tokenize(s2, row.get("sentence2_binary_parse")))
            labels.append(LABELS[gold])
    if limit and len(labels) < limit:
        raise UserError(f"{path} has {len(labels)} gold-labelled pairs, fewer than {limit}")
    return NLIPairs(premises, hypotheses, torch.tensor(labels, dtype=torch.int64))
