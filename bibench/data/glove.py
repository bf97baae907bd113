"""GloVe vectors in their text format (https://nlp.stanford.edu/projects/glove/).

Each line is ``word v1 ... vD``. Only the words a dataset needs are parsed while reading
(the 840B file has 2.2M lines), so memory stays proportional to the dataset's
vocabulary. Lines whose field count is not ``D + 1`` (the 840B file has a few entries
with spaces inside the "word") are skipped: a whitespace token never matches them. When
a word occurs twice, the first vector wins.

Out-of-vocabulary handling (:meth:`Embeddings.ids`): a token is looked up as written,
then lower-cased; a token found neither way is dropped (as the UniBiO/InferSent
loaders do). A sentence left with no token is one step of the all-zero vector (index
0, which also pads), so every sequence has length >= 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import torch

from bibench.errors import UserError

__all__ = ["GLOVE_URL", "Embeddings", "glove_path", "read_glove"]

GLOVE_URL = "https://nlp.stanford.edu/projects/glove/"


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """``vectors (V + 1, D)`` float64 with row 0 all zeros; ``index`` maps a word to its row."""

    vectors: torch.Tensor
    index: dict[str, int]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def lookup(self, token: str) -> int | None:
        """Row of ``token`` (as written, else lower case), or None when out of vocabulary."""
        row = self.index.get(token)
        return row if row is not None else self.index.get(token.lower())

    def ids(self, sentences: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded rows ``(N, T)`` int64 and lengths ``(N,)`` of tokenised sentences."""
        rows = []
        for tokens in sentences:
            found = [r for r in map(self.lookup, tokens) if r is not None]
            rows.append(found or [0])
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        out = torch.zeros(len(rows), int(lengths.max()) if rows else 0, dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        return out, lengths


def glove_path(path: str | Path) -> Path:
    """``path`` if it is a file; else a UserError saying where to get GloVe."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(
            f"GloVe file not found: {file} (download e.g. glove.840B.300d.zip from "
            f"{GLOVE_URL} and unzip it)"
        )
    return file


def read_glove(path: str | Path, vocab: Iterable[str]) -> Embeddings:
    """The vectors of the words in ``vocab`` (and of their lower-case forms)."""
    file = glove_path(path)
    wanted = set(vocab)
    wanted |= {w.lower() for w in wanted}
    index: dict[str, int] = {}
    vectors: list[list[float]] = []
    dim = 0
    with file.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            word = line[: line.find(" ")]
            if not dim:
                dim = len(line.split()) - 1
                if dim < 1:
                    raise UserError(f"malformed GloVe line {file}:{lineno}: no vector")
            if word not in wanted or word in index:
                continue
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) != dim + 1:
                continue
            try:
                vectors.append([float(v) for v in parts[1:]])
            except ValueError:
                msg = f"malformed GloVe line {file}:{lineno}: non-numeric value"
                raise UserError(msg) from None
            index[word] = len(vectors)  # row 0 is the zero vector
    if not dim:
        raise UserError(f"GloVe file {file} is empty")
    table = torch.zeros(len(vectors) + 1, dim, dtype=torch.float64)
    if vectors:
        table[1:] = torch.tensor(vectors, dtype=torch.float64)
    return Embeddings(table, index)
