r"""The problem contract.

A bilevel problem is

.. math::

    \min_x \Phi(x) = \min_{y \in S(x)} f(x, y), \qquad S(x) = \arg\min_y g(x, y).

Every tensor carries a leading run dimension ``R``: ``x`` is ``(R, dim_x)``, ``y`` is
``(R, dim_y)``, and ``f``/``g`` return ``(R,)``. Runs never interact, so the gradient of
``f(x, y).sum()`` with respect to ``x`` is the stack of per-run gradients; the default
derivative oracles below rely on that and use ``torch.func`` (forward-over-reverse for
second derivatives).

Problem instances (benchopt's "datasets" side of a benchmark) can share a batch too: a
problem class that names ``stack_params`` (e.g. ``("seed",)``, the instance's data seed)
lets runs whose parameters differ only in those fields advance as one batch.
:meth:`Problem.for_batch` builds each distinct instance once and :meth:`Problem.stack`
joins them into one problem whose per-instance data carry the leading run dimension
(run ``r`` sees the data of its own instance). The runner groups by
:meth:`Problem.stack_key`; rows are the same, to rounding, as with each instance run
on its own.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import torch
from torch.func import grad, jvp

from bibench.params import ParamsBase
from bibench.rng import BatchedRNG

__all__ = [
    "Batch", "Problem", "ProblemParams", "batch_mean", "mtv", "mv", "stacked_batch_mean", "take",
]  # fmt: skip

Batch = torch.Tensor | None
"""Sample indices of shape ``(R, B)`` into a finite sum, or ``None`` for the full sum."""


@dataclasses.dataclass(frozen=True)
class ProblemParams(ParamsBase):
    """Parameters every problem has.

    Attributes:
        noise_std: std of additive Gaussian noise on every derivative oracle
            (gradients, HVPs, cross derivatives); 0 is deterministic.
        batch_size: minibatch size for finite-sum problems; 0 uses the full sum.
        seed: seed of the problem instance (its data), distinct from run seeds.
    """

    noise_std: float = 0.0
    batch_size: int = 0
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {self.batch_size}")


class Problem:
    """Base class of every problem plugin.

    Required from a subclass:
        ``Params`` (a :class:`ProblemParams` subclass), ``regime`` (one word or phrase:
        "strongly convex", "manifold", "PL", "uniformly convex", "real data", ...),
        a docstring whose first line is the one-line description, ``build()`` which
        sets ``dim_x``, ``dim_y`` and the data, and ``f``, ``g``, ``init_x``, ``init_y``.

    Ground truth (uncounted, untimed, used only for metrics): ``phi``, ``hypergrad``,
    ``y_star``, ``g_star``, ``dist_to_solution_set`` and ``phi_star``. Any of them may
    raise ``NotImplementedError``; the metric is then NaN.

    Optional: analytic overrides of ``grad_x_f`` ... ``cross_xy_g`` (they must match
    the ``torch.func`` defaults, which the tests check), finite-sum sizes
    ``n_samples_f`` / ``n_samples_g`` (0 when not a finite sum), ``metrics`` for extra
    per-run columns, and ``formulas`` for ``bibench show``.

    Optional, stacking instances into one batch: ``stack_params``, the parameters that
    may differ between the runs of one batch (default none: every instance runs in its
    own batches), and ``stack_data``, the names of the attributes ``build`` sets that
    hold per-instance data (tensors, numbers, or dicts of them). Then :meth:`stack`
    (whose default stacks ``stack_data`` and sets ``stacked`` to ``R``) returns one
    problem whose ``stack_data`` carry a leading run dimension ``R``; every method must
    then use row ``r`` of those for run ``r``, ground truth included (``phi_star`` may
    then be an ``(R,)`` tensor). The ``stack_params`` must not change any data shape
    (instances that differ in a shape-changing field go to separate batches when
    :meth:`stack_key` keeps that field); :meth:`stack` refuses unequal shapes. A
    subclass that caches derived data overrides :meth:`stack` to reset its caches.
    """

    name: ClassVar[str] = ""
    regime: ClassVar[str] = ""
    Params: ClassVar[type[ProblemParams]] = ProblemParams
    n_samples_f: int = 0
    n_samples_g: int = 0
    epoch_sampling: ClassVar[bool] = False
    """Minibatches by epochs: each run walks through its own random permutation of the
    finite sum and reshuffles when fewer than ``batch_size`` samples are left (no
    replacement within an epoch). False: independent uniform draws on every call."""
    dim_x: int
    dim_y: int
    stack_params: ClassVar[tuple[str, ...]] = ()
    """Parameter fields that may differ between the runs of one batch."""
    stack_data: ClassVar[tuple[str, ...]] = ()
    """Attributes holding per-instance data, stacked over runs by :meth:`stack`."""
    stacked: int = 0
    """Runs whose instances :meth:`stack` joined (their data lead with that dimension);
    0 for one instance shared by every run."""

    def __init__(
        self, params: ProblemParams | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.params = params if params is not None else self.Params()
        self.device = torch.device(device)
        self.dtype = torch.float64
        self.build()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def stack_key(cls, params: ProblemParams) -> Hashable:
        """Equal keys: instances that may share a batch. ``params`` itself when the class
        stacks nothing, else its fields other than ``stack_params``."""
        if not cls.stack_params:
            return params
        return tuple(
            (f.name, getattr(params, f.name))
            for f in dataclasses.fields(params)
            if f.name not in cls.stack_params
        )

    @classmethod
    def for_batch(
        cls, params: Sequence[ProblemParams], device: str | torch.device = "cpu"
    ) -> Problem:
        """The problem of a batch whose run ``r`` has parameters ``params[r]``: the one
        instance when they are all equal, else each distinct instance built once and
        joined by :meth:`stack`."""
        keys: dict[ProblemParams, int] = {}  # frozen dataclasses (batch_key hashes them too)
        index = [keys.setdefault(p, len(keys)) for p in params]  # run -> its instance
        distinct = list(keys)
        if len(distinct) == 1:
            return cls(distinct[0], device)
        differ = {
            f.name
            for f in dataclasses.fields(distinct[0])
            if any(getattr(p, f.name) != getattr(distinct[0], f.name) for p in distinct)
        }
        if not differ <= set(cls.stack_params):
            raise ValueError(
                f"problem {cls.name}: runs of one batch differ in {', '.join(sorted(differ))}; "
                f"only {', '.join(cls.stack_params) or 'nothing'} may differ"
            )
        built = [cls(p, device) for p in distinct]
        return cls.stack([built[i] for i in index])

    @classmethod
    def stack(cls, instances: Sequence[Problem]) -> Problem:
        """One problem for ``len(instances)`` runs, run ``r`` on ``instances[r]``: a copy
        of the first with every ``stack_data`` attribute stacked over the instances. Its
        ``params`` are the first instance's: only the fields outside ``stack_params``,
        equal for all, hold for every run."""
        if not cls.stack_params:
            raise NotImplementedError(f"problem {cls.name} does not stack instances")
        out = copy.copy(instances[0])
        for name in cls.stack_data:
            values = [getattr(p, name) for p in instances]
            value = _stack(values, f"{cls.name}.{name}", out.device)
            setattr(out, name, value)
        out.stacked = len(instances)
        return out

    def build(self) -> None:
        """Set ``dim_x``, ``dim_y`` and create the data on ``self.device``."""
        raise NotImplementedError

    def tensor(self, data: Any) -> torch.Tensor:
        """A float64 tensor on the problem's device."""
        return torch.as_tensor(data, dtype=self.dtype, device=self.device)

    def data_generator(self) -> torch.Generator:
        """A CPU generator seeded with ``params.seed`` for building instance data."""
        return torch.Generator().manual_seed(int(self.params.seed))

    # -- objectives -----------------------------------------------------------------
    def f(self, x: torch.Tensor, y: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        """Upper objective, ``(R,)``."""
        raise NotImplementedError

    def g(self, x: torch.Tensor, y: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        """Lower objective, ``(R,)``."""
        raise NotImplementedError

    def init_x(self, rng: BatchedRNG) -> torch.Tensor:
        """Initial upper iterate ``(R, dim_x)``; may use ``rng`` for per-seed draws."""
        return torch.zeros(len(rng.seeds), self.dim_x, dtype=self.dtype, device=self.device)

    def init_y(self, rng: BatchedRNG) -> torch.Tensor:
        """Initial lower iterate ``(R, dim_y)``."""
        return torch.zeros(len(rng.seeds), self.dim_y, dtype=self.dtype, device=self.device)

    # -- derivative oracles (torch.func defaults) -------------------------------------
    def grad_x_f(self, x: torch.Tensor, y: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        return grad(lambda x_: self.f(x_, y, batch).sum())(x)

    def grad_y_f(self, x: torch.Tensor, y: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        return grad(lambda y_: self.f(x, y_, batch).sum())(y)

    def grad_x_g(self, x: torch.Tensor, y: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        return grad(lambda x_: self.g(x_, y, batch).sum())(x)

    def grad_y_g(self, x: torch.Tensor, y: torch.Tensor, batch: Batch = None) -> torch.Tensor:
        return grad(lambda y_: self.g(x, y_, batch).sum())(y)

    def hvp_yy_g(
        self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, batch: Batch = None
    ) -> torch.Tensor:
        r""":math:`\nabla^2_{yy} g(x, y)\, v`, shape ``(R, dim_y)``."""
        return jvp(lambda y_: Problem.grad_y_g(self, x, y_, batch), (y,), (v,))[1]

    def cross_xy_g(
        self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, batch: Batch = None
    ) -> torch.Tensor:
        r""":math:`\nabla^2_{xy} g(x, y)\, v = \nabla_x \langle \nabla_y g(x, y), v\rangle`,
        shape ``(R, dim_x)``."""
        return jvp(lambda y_: Problem.grad_x_g(self, x, y_, batch), (y,), (v,))[1]

    # -- ground truth ---------------------------------------------------------------
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        r"""Optimistic hyper-objective :math:`\Phi(x)`, ``(R,)``."""
        return self.f(x, self.y_star(x))

    def hypergrad(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla\Phi(x)`, ``(R, dim_x)``."""
        raise NotImplementedError

    def y_star(self, x: torch.Tensor) -> torch.Tensor:
        r"""Optimistic selection :math:`y^\star(x) = \arg\min_{y\in S(x)} f(x, y)`."""
        raise NotImplementedError

    def g_star(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`g^*(x) = \min_y g(x, y)`, ``(R,)``."""
        return self.g(x, self.y_star(x))

    def dist_to_solution_set(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{dist}(y, S(x))`, ``(R,)``; the default assumes a singleton."""
        return torch.linalg.vector_norm(y - self.y_star(x), dim=-1)

    @property
    def phi_star(self) -> float:
        r""":math:`\min_x \Phi(x)` when known, else NaN."""
        return float("nan")

    def sample_solution_set(self, x: torch.Tensor, n: int) -> torch.Tensor:
        r"""``n`` points of :math:`S(x)` per run, ``(R, n, dim_y)`` (deterministic draws),
        used by tests to check that ``y_star`` minimises ``f`` over :math:`S(x)`."""
        raise NotImplementedError

    def flow_selection(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        r"""Gradient-flow selection :math:`\varphi(x, y_0) = \lim_t \varphi_t`,
        :math:`\dot\varphi_t = -\nabla_y g(x, \varphi_t)`, :math:`\varphi_0 = y_0`
        (Arbel & Mairal 2022), where it has a closed form."""
        raise NotImplementedError

    def selection_map_grad(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla_x \mathcal L_\varphi(x, y_0)` with
        :math:`\mathcal L_\varphi(x, y_0) = f(x, \varphi(x, y_0))`: BGS-Opt's own
        stationarity measure, where it has a closed form."""
        raise NotImplementedError

    def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-run metric columns, ``name -> (R,)``."""
        return {}

    def formulas(self) -> str:
        """Human-readable f, g, S(x), Phi for ``bibench show``."""
        return (type(self).__doc__ or "").strip()

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _stack(values: list[Any], what: str, device: torch.device) -> Any:
    """Values of one attribute over instances, stacked on a new leading dimension."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _stack([v[k] for v in values], f"{what}[{k!r}]", device) for k in first}
    if isinstance(first, torch.Tensor):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"cannot stack instances: {what} has shapes {sorted(shapes)}")
        return torch.stack(values)
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        kind = torch.float64 if any(isinstance(v, float) for v in values) else torch.int64
        return torch.tensor(values, dtype=kind, device=device)
    raise TypeError(f"cannot stack {what} of type {type(first).__name__}")


def take(data: torch.Tensor, idx: torch.Tensor | None, stacked: bool = False) -> torch.Tensor:
    """Rows ``idx`` of per-sample data: ``idx`` ``None`` (all), ``(m,)`` shared by the
    runs, or ``(R, B)`` per run; ``data`` ``(n, ...)``, or ``(R, n, ...)`` per run when
    ``stacked`` (run ``r`` then indexes its own ``data[r]``)."""
    if idx is None:
        return data
    if not stacked:
        return data[idx]
    if idx.dim() == 1:
        return data[:, idx]
    runs = torch.arange(data.shape[0], device=idx.device)[:, None]
    return data[runs, idx]


def batch_mean(data: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    r"""Per-run minibatch means of per-sample data: ``data[batch].mean(1)``, shape
    ``(R, *data.shape[1:])``, for ``data`` ``(n, ...)`` and ``batch`` ``(R, B)``.

    :math:`\frac1B\sum_{j} \text{data}_{i_{rj}}` by one ``embedding_bag`` over the samples
    flattened to rows, so that the ``(R, B, ...)`` gather ``data[batch]`` (``B`` copies of
    the problem's data per run) is never formed: memory grows with ``R`` by the output
    only. Equal to the gather's mean up to rounding (the sums run in another order)."""
    flat = data.reshape(data.shape[0], -1)
    out = torch.nn.functional.embedding_bag(batch, flat, mode="mean")
    return out.reshape(batch.shape[0], *data.shape[1:])


def stacked_batch_mean(data: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """:func:`batch_mean` of stacked instances: ``data`` ``(R, n, ...)``, run ``r``
    averaging its own ``data[r]`` (the runs' samples as one table, each run's indices
    offset to its block)."""
    offset = data.shape[1] * torch.arange(batch.shape[0], device=batch.device)[:, None]
    return batch_mean(data.reshape(-1, *data.shape[2:]), batch + offset)


def mv(mat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``mat @ v`` per run; ``mat`` is shared ``(p, q)`` or per run ``(R, p, q)``."""
    if mat.dim() == 2:
        return v @ mat.T
    return torch.bmm(mat, v[..., None])[..., 0]


def mtv(mat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``mat.T @ v`` per run; ``mat`` is shared ``(p, q)`` or per run ``(R, p, q)``."""
    if mat.dim() == 2:
        return v @ mat
    return torch.bmm(mat.transpose(1, 2), v[..., None])[..., 0]
