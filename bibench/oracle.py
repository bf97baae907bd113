r"""The counting oracle: the only door an algorithm has to a problem.

Each call is counted by type, per run, as it happens:

=============  =====================================================
``f``, ``g``   values
``grad_x_f``   :math:`\nabla_x f`      ``grad_y_f``  :math:`\nabla_y f`
``grad_x_g``   :math:`\nabla_x g`      ``grad_y_g``  :math:`\nabla_y g`
``hvp_yy_g``   :math:`\nabla^2_{yy} g\, v`
``cross_xy_g`` :math:`\nabla^2_{xy} g\, v` (an ``R^{dim_x}`` vector)
=============  =====================================================

``samples`` counts sample evaluations: a call on a minibatch of ``B`` indices adds
``B``; a full-sum call adds the finite-sum size (1 for problems that are not finite
sums). In the stochastic variants each derivative call draws a fresh minibatch unless
the algorithm passes one from :meth:`Oracle.sample` (to reuse it across calls), and
Gaussian noise of std ``noise_std`` is added to every derivative output.

``active`` (a bool ``(R,)`` mask) lets an algorithm with per-run random loop lengths
(e.g. a randomly truncated Neumann series) count a call only for the runs that use it.
"""

from __future__ import annotations

import torch

from bibench.problem import Batch, Problem
from bibench.rng import BatchedRNG

__all__ = ["ORACLE_TYPES", "Oracle"]

ORACLE_TYPES = (
    "f",
    "g",
    "grad_x_f",
    "grad_y_f",
    "grad_x_g",
    "grad_y_g",
    "hvp_yy_g",
    "cross_xy_g",
)
_SAMPLE_SET = {"f": "f", "grad_x_f": "f", "grad_y_f": "f"}  # everything else samples g


class Oracle:
    """Counting, optionally stochastic, access to ``problem`` for ``R`` runs.

    Args:
        problem: the problem instance.
        rng: per-run generator (its stream is reserved for oracle sampling).
    """

    def __init__(self, problem: Problem, rng: BatchedRNG) -> None:
        self.problem = problem
        self.rng = rng
        self.n_runs = len(rng.seeds)
        self.dim_x = problem.dim_x
        self.dim_y = problem.dim_y
        self.noise_std = float(problem.params.noise_std)
        self.batch_size = int(problem.params.batch_size)
        zeros = lambda: torch.zeros(self.n_runs, dtype=torch.int64, device=rng.device)  # noqa: E731
        self._counts: dict[str, torch.Tensor] = {t: zeros() for t in ORACLE_TYPES}
        self._samples = zeros()
        # Calls made for every run are tallied as Python ints and added to the tensors
        # when read: a tensor update per call would cost as much as a small oracle.
        self._pending: dict[str, int] = dict.fromkeys(ORACLE_TYPES, 0)
        self._pending_samples = 0
        self._uniform_total = 0  # calls counted for every run
        self._masked = False  # whether a call counted for some runs only (``active``)
        self._epochs: dict[str, tuple[torch.Tensor, int]] = {}  # which -> (perm, used)
        # fixed per instance, read on every call: whether any call draws a minibatch, and
        # the samples a full-sum call of each type adds
        self._draws = self._minibatch("f") or self._minibatch("g")
        self._full = {k: max(self._n(_SAMPLE_SET.get(k, "g")), 1) for k in ORACLE_TYPES}

    def _flush(self) -> None:
        for t, k in self._pending.items():
            if k:
                self._counts[t] += k
                self._pending[t] = 0
        if self._pending_samples:
            self._samples += self._pending_samples
            self._pending_samples = 0

    def uniform_total(self) -> int | None:
        """All calls so far, per run, when every call counted for every run (the total is
        then the same for all runs and known without reading the device); ``None`` once
        a call was counted with an ``active`` mask."""
        return None if self._masked else self._uniform_total

    @property
    def counts(self) -> dict[str, torch.Tensor]:
        """Calls so far by type, per run, ``type -> (R,)`` int64."""
        self._flush()
        return self._counts

    @property
    def samples(self) -> torch.Tensor:
        """Sample evaluations so far, per run, ``(R,)`` int64."""
        self._flush()
        return self._samples

    @property
    def stochastic(self) -> bool:
        return self.noise_std > 0 or self._minibatch("f") or self._minibatch("g")

    def total(self) -> torch.Tensor:
        """All oracle calls so far, per run, ``(R,)``."""
        return sum(self.counts.values())  # type: ignore[return-value]

    def _n(self, which: str) -> int:
        return self.problem.n_samples_f if which == "f" else self.problem.n_samples_g

    def _minibatch(self, which: str) -> bool:
        return 0 < self.batch_size < self._n(which)

    def sample(self, which: str = "g") -> Batch:
        """A minibatch ``(R, B)`` of indices into the finite sum of ``f`` or ``g`` (``None``
        when the problem is not a finite sum or ``batch_size`` is 0)."""
        if not self._minibatch(which):
            return None
        if self.problem.epoch_sampling:
            return self._next_in_epoch(which)
        return self.rng.randint(self._n(which), self.batch_size)

    def _next_in_epoch(self, which: str) -> torch.Tensor:
        """The next ``batch_size`` indices of each run's permutation of the finite sum; a
        fresh per-run permutation once the current one has too few left (drop-last)."""
        n, size = self._n(which), self.batch_size
        perm, used = self._epochs.get(which, (None, n))
        if used + size > n:
            perm, used = torch.argsort(self.rng.uniform(n), dim=-1), 0
        self._epochs[which] = (perm, used + size)
        return perm[:, used : used + size]

    # -- bookkeeping ----------------------------------------------------------------
    def _count(self, kind: str, batch: Batch, active: torch.Tensor | None) -> None:
        used = batch.shape[-1] if batch is not None else self._full[kind]
        if active is None:
            self._pending[kind] += 1
            self._pending_samples += used
            self._uniform_total += 1
            return
        self._masked = True
        inc = active.to(torch.int64)
        self._counts[kind] += inc
        self._samples += inc * used

    def _batch(self, kind: str, batch: Batch) -> Batch:
        if batch is None and kind not in ("f", "g"):
            return self.sample(_SAMPLE_SET.get(kind, "g"))
        return batch

    def _noisy(self, out: torch.Tensor) -> torch.Tensor:
        if self.noise_std > 0:
            out = out + self.noise_std * self.rng.normal(*out.shape[1:], dtype=out.dtype)
        return out

    def _call(self, kind: str, batch: Batch, active: torch.Tensor | None, *args: torch.Tensor):
        if self._draws:
            batch = self._batch(kind, batch)
        self._count(kind, batch, active)
        out = getattr(self.problem, kind)(*args, batch=batch)
        return out if kind in ("f", "g") else self._noisy(out)

    # -- the oracles ----------------------------------------------------------------
    def f(self, x, y, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("f", batch, active, x, y)

    def g(self, x, y, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("g", batch, active, x, y)

    def grad_x_f(self, x, y, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("grad_x_f", batch, active, x, y)

    def grad_y_f(self, x, y, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("grad_y_f", batch, active, x, y)

    def grad_x_g(self, x, y, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("grad_x_g", batch, active, x, y)

    def grad_y_g(self, x, y, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("grad_y_g", batch, active, x, y)

    def grad_f(self, x, y, batch: Batch = None, active=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Both partial gradients of ``f`` on one sample (counts one of each)."""
        batch = self._batch("grad_x_f", batch)
        return self.grad_x_f(x, y, batch, active), self.grad_y_f(x, y, batch, active)

    def hvp_yy_g(self, x, y, v, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("hvp_yy_g", batch, active, x, y, v)

    def cross_xy_g(self, x, y, v, batch: Batch = None, active=None) -> torch.Tensor:
        return self._call("cross_xy_g", batch, active, x, y, v)
