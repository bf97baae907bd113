r"""SNLI data hypercleaning with a recurrent encoder (UniBiO (ICLR 2026, arXiv 2603.00027), Sec. 6).

Data (read from disk, never downloaded): the official SNLI 1.0 jsonl files in
``data_dir`` (:mod:`bibench.data.snli`) and GloVe text vectors at ``glove_path``
(:mod:`bibench.data.glove`; out-of-vocabulary tokens dropped after a lower-case retry).
Splits are kept apart: train = the first ``n_train`` gold-labelled pairs of
``snli_1.0_train.jsonl`` (file order, as the UniBiO code), validation = the first
``n_val`` of ``snli_1.0_dev.jsonl``, test = the first ``n_test`` of
``snli_1.0_test.jsonl``. Training labels are flipped once with probability ``q`` to one
of the two other classes (seed ``seed``); validation and test labels stay clean.

Model (the paper's: 300-d GloVe inputs, a tanh RNN, 3 classes): premise and hypothesis
are encoded by the same ``layers``-deep tanh RNN of width ``hidden`` into max-pooled
codes :math:`u, v`; the logits are :math:`W_{out}[u, v, |u-v|, u\odot v] + b_{out}` with
:math:`W_{out} \in \mathbb R^{3\times 4H}` (the UniBiO code's head emits 4096 logits, a
bug we do not copy). Inputs are frozen (no embedding layer), as in the paper.

Bilevel problem (:mod:`bibench.data.cleaning`): :math:`x = \lambda \in \mathbb R^{n}`,
:math:`y` = all RNN and head parameters (flat),
:math:`g = \frac1n\sum_i\sigma(\lambda_i)\,\ell_i(y) + c\sum_j|y_j|^p` (default
:math:`p = 3`, :math:`c = 10^{-4}`, the paper's choice), :math:`f` = mean cross entropy on
validation pairs. Minibatches are per-run epochs of the training / validation pairs.

Second derivatives (HVPs, cross products) come from the ``torch.func`` defaults through
the recurrence written out in :mod:`bibench.data.models`; cuDNN's fused RNN kernel,
which has no double backward, is never called, so no ``cudnn.enabled = False`` switch
is needed on CUDA.

Choices the paper leaves open: one bias per RNN layer (``nn.RNN``'s two are redundant);
initial parameters drawn per run like PyTorch's defaults, :math:`U(\pm 1/\sqrt H)` for
the RNN and :math:`U(\pm 1/\sqrt{4H})` for the head (so seeds differ); the regulariser
covers every parameter. Ground truth: none (the lower level is nonconvex), so
``hypergrad_norm`` and ``phi`` are NaN; the metrics are accuracies, AUC, precision and
recall (:mod:`bibench.data.cleaning`). The uniform-weights baseline is the same run with
upper step size 1e-12 (weights frozen at 1/2 to 12 digits; ``configs/snli_cpu.yml``).
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from bibench import register_problem
from bibench.data.cleaning import CleaningParams, CleaningProblem
from bibench.data.glove import glove_path, read_glove
from bibench.data.models import nli_logits, rnn_encode, rnn_layout
from bibench.data.snli import LABELS, read_snli, snli_path

SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}  # problem split -> SNLI file


@dataclasses.dataclass(frozen=True)
class SNLICleaningParams(CleaningParams):
    q: float = 0.1  # the paper's corruption rate (the code's default is 0.2)
    p: float = 3.0  # the paper's exponent: uniformly, not strongly, convex
    c: float = 1e-4  # the UniBiO code's regulariser weight
    data_dir: str = ""  # folder with snli_1.0_{train,dev,test}.jsonl
    glove_path: str = ""  # GloVe text file, e.g. glove.840B.300d.txt
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 1000
    hidden: int = 64
    layers: int = 1

    def validate(self) -> None:
        super().validate()
        if min(self.n_train, self.n_val, self.n_test) < 1:
            raise ValueError("n_train, n_val and n_test must be >= 1")
        if self.hidden < 1 or self.layers < 1:
            raise ValueError(f"hidden and layers must be >= 1, got {self.hidden}, {self.layers}")
        for split in SPLIT_FILES.values():
            snli_path(self.data_dir, split)  # a missing file: one line naming it and the URL
        glove_path(self.glove_path)


@functools.lru_cache(maxsize=2)
def _load(data_dir: str, glove: str, sizes: tuple[int, int, int]):
    """Token rows, lengths and labels per split, and the GloVe table restricted to the
    splits' words (cached: a sweep builds the problem once per batch)."""
    pairs = {
        split: read_snli(data_dir, SPLIT_FILES[split], n)
        for split, n in zip(("train", "val", "test"), sizes)
    }
    vocab = {w for ds in pairs.values() for s in ds.premises + ds.hypotheses for w in s}
    emb = read_glove(glove, vocab)
    out = {}
    for split, ds in pairs.items():
        ids, lengths = emb.ids(ds.premises + ds.hypotheses)
        n = len(ds)
        out[split] = (ids[:n], ids[n:], lengths[:n], lengths[n:], ds.labels)
    return out, emb.vectors


@register_problem("snli_cleaning")
class SNLICleaning(CleaningProblem):
    """SNLI hypercleaning: GloVe inputs, tanh RNN encoder, [u, v, |u−v|, u⊙v] head (UniBiO §6)."""

    Params = SNLICleaningParams
    eval_chunk = 256

    def build(self) -> None:
        p = self.params
        data, vectors = _load(p.data_dir, p.glove_path, (p.n_train, p.n_val, p.n_test))
        dev = self.device
        self.vectors = self.tensor(vectors)
        self.tokens = {s: tuple(t.to(dev) for t in d[:4]) for s, d in data.items()}
        self.set_labels(data["train"][4], data["val"][4], data["test"][4], len(LABELS))
        self.layout = rnn_layout(self.vectors.shape[1], p.hidden, p.layers, len(LABELS))
        self.dim_y = self.layout.size

    def logits(self, y, split, idx):
        prem, hyp, len_p, len_h = self.tokens[split]
        if idx is not None:
            prem, hyp, len_p, len_h = prem[idx], hyp[idx], len_p[idx], len_h[idx]
        steps = int(torch.maximum(len_p.max(), len_h.max()))
        tokens = torch.cat([prem[..., :steps], hyp[..., :steps]], dim=-2)  # (..., 2B, T)
        lengths = torch.cat([len_p, len_h], dim=-1)
        params = self.layout.unflatten(y)
        codes = rnn_encode(params, self.vectors[tokens], lengths, self.params.layers)
        half = len_p.shape[-1]
        return nli_logits(params, codes[:, :half], codes[:, half:])

    def init_y(self, rng):
        hidden = self.params.hidden
        scale = torch.cat(
            [
                torch.full((b - a,), (4 * hidden if name.endswith("_out") else hidden) ** -0.5)
                for name, (a, b) in self.layout.offsets.items()
            ]
        ).to(self.device, self.dtype)
        return (2 * rng.uniform(self.dim_y).to(self.device, self.dtype) - 1) * scale
