r"""``bibench show PROBLEM``: a problem's formulas, parameters and ground truth at one ``x``,
and a picture of its lower level.

The text is the problem's ``formulas()`` (with its parameter values), the full parameter
list, and :math:`\Phi(x)`, :math:`\|\nabla\Phi(x)\|`, :math:`y^*(x)`, :math:`g^*(x)`,
:math:`\Phi^*` at ``x`` (``--x``, or the initial ``x`` of seed 0).

The picture (PNG, matplotlib Agg) is drawn when the lower level lives in a plane: either
``dim_y = 2``, or the problem defines ``plot_plane(x) -> (origin (R, d), basis (R, 2, d),
half_width (R,))`` (an affine plane of :math:`\mathbb R^d` that contains :math:`S(x)`,
e.g. ``hat`` with ``k = 1``); ``plot_plane`` may raise ``NotImplementedError``. It shows
:math:`g(x, \cdot) - g^*(x)` on the plane (log colour scale), level sets of
:math:`f(x, \cdot)`, the points of :math:`S(x)` from ``sample_solution_set`` that lie in the
plane, and :math:`y^*(x)`. Plane coordinates are :math:`\langle y, b_k\rangle` for the
basis rows :math:`b_k`, so for coordinate planes they are the coordinates of ``y``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch

from bibench.config import parse_name_list
from bibench.errors import UserError
from bibench.params import build_params
from bibench.problem import Problem
from bibench.registry import discover, get_problem
from bibench.rng import BatchedRNG
from bibench.runner import STREAM_INIT

__all__ = ["describe", "draw", "picture_data", "register", "run"]

N_GRID = 241  # heatmap resolution per axis
N_SET = 600  # points of S(x) drawn
PICTURE_FORMATS = ("png", "pdf", "svg")


def register(sub) -> None:
    p = sub.add_parser("show", help="print a problem's formulas; draw its lower level")
    p.add_argument("problem", help="problem name, e.g. hat")
    p.add_argument("--params", default="", metavar="K=V,...",
                   help="problem parameters, e.g. dim_y=2,radius=0.5")  # fmt: skip
    p.add_argument("--x", metavar="X1,X2,...",
                   help="upper variable (default: the initial x of seed 0)")  # fmt: skip
    p.add_argument("--out", metavar="FILE",
                   help="picture path, written as given; its suffix (.png, .pdf, .svg) sets the "
                   "format, PNG when it has none (default results/show/PROBLEM.png)")  # fmt: skip
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="extra plugin file (repeatable)")  # fmt: skip
    p.set_defaults(func=run)


def build_problem(name: str, params: str) -> Problem:
    """The problem ``name`` with ``params`` given as ``k=v,...`` (values are YAML)."""
    ((name, values),) = parse_name_list(f"{name}[{params}]" if params.strip() else name, "problem")
    cls = get_problem(name)
    return cls(build_params(cls.Params, f"problem {name}", values))


def upper_point(problem: Problem, text: str | None) -> torch.Tensor:
    """``x`` of shape ``(1, dim_x)`` from ``--x``, or the initial ``x`` of seed 0."""
    if text is None:
        return problem.init_x(BatchedRNG(torch.zeros(1, dtype=torch.int64), STREAM_INIT))
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"bad value for --x: {text!r} (expected comma-separated numbers)") from None
    if len(values) != problem.dim_x:
        raise UserError(f"bad value for --x: {len(values)} numbers, problem has dim_x = "
                        f"{problem.dim_x}")  # fmt: skip
    return problem.tensor(values)[None]


def _vec(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in t.reshape(-1).tolist()) + "]"


def describe(problem: Problem, x: torch.Tensor, x_source: str) -> str:
    """The text ``bibench show`` prints."""
    params = ", ".join(f"{k} = {v}" for k, v in dataclasses.asdict(problem.params).items())
    lines = [
        f"{problem.name}: {problem.description()}",
        f"regime: {problem.regime};  dim_x = {problem.dim_x}, dim_y = {problem.dim_y}",
        f"parameters: {params}",
        "",
        problem.formulas(),
        "",
        f"at x = {_vec(x)} ({x_source}):",
    ]
    truth = {
        "Phi(x)": lambda: f"{problem.phi(x).item():.12g}",
        "|grad Phi(x)|": lambda: f"{torch.linalg.vector_norm(problem.hypergrad(x)).item():.6g}",
        "y*(x)": lambda: _vec(problem.y_star(x)),
        "g*(x)": lambda: f"{problem.g_star(x).item():.12g}",
    }
    for label, value in truth.items():
        try:
            lines.append(f"  {label} = {value()}")
        except NotImplementedError:
            lines.append(f"  {label}: not known")
    lines.append(f"  Phi* = {problem.phi_star:.12g}")
    return "\n".join(lines)


def _plane(problem: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``(origin (d,), basis (2, d), half_width)`` of the drawing plane, or None."""
    hook = getattr(problem, "plot_plane", None)
    if hook is not None:
        try:
            origin, basis, half = hook(x)
            return origin[0], basis[0], float(half[0])
        except NotImplementedError:
            pass
    if problem.dim_y != 2:
        return None
    # the whole plane: a window around S(x) and y*(x)
    pts = [problem.y_star(x)]
    with contextlib.suppress(NotImplementedError):
        pts.append(problem.sample_solution_set(x, N_SET)[0])
    allp = torch.cat(pts)
    centre = 0.5 * (allp.max(0).values + allp.min(0).values)
    half = max(0.65 * float((allp.max(0).values - allp.min(0).values).max()), 1.0)
    return centre, torch.eye(2, dtype=x.dtype, device=x.device), half


def picture_data(problem: Problem, x: torch.Tensor) -> dict[str, Any] | None:
    """What the picture shows, in plane coordinates :math:`\\langle y, b_k\\rangle`.

    Keys: ``u``, ``v`` (axes, ``(n,)``), ``g_gap`` and ``f`` (``(n, n)``, indexed
    ``[v, u]``), ``set`` (points of S(x) in the plane, ``(k, 2)``), ``y_star`` (``(2,)``),
    ``labels``. None when the lower level cannot be drawn in a plane.
    """
    plane = _plane(problem, x)
    if plane is None:
        return None
    origin, basis, half = plane
    base = basis @ origin  # plane coordinates of the origin
    s = torch.linspace(-half, half, N_GRID, dtype=x.dtype, device=x.device)
    ss, tt = torch.meshgrid(s, s, indexing="xy")  # [v, u]
    ys = origin + ss.reshape(-1, 1) * basis[0] + tt.reshape(-1, 1) * basis[1]
    xs = x.expand(ys.shape[0], -1)
    with torch.no_grad():
        g_gap = (problem.g(xs, ys) - problem.g_star(x)).reshape(N_GRID, N_GRID)
        fval = problem.f(xs, ys).reshape(N_GRID, N_GRID)
        y_star = problem.y_star(x)[0]
        try:
            pts = problem.sample_solution_set(x, N_SET)[0]
        except NotImplementedError:
            pts = y_star[None]
    coords = (pts - origin) @ basis.T
    off_plane = torch.linalg.vector_norm(pts - origin - coords @ basis, dim=-1)
    in_plane = coords[off_plane <= 1e-9 * (1.0 + half)]
    labels = []
    for b in basis:
        unit = (b.abs() == 1).nonzero()
        labels.append(f"y{int(unit[0]) + 1}" if len(unit) == 1 and b.abs().sum() == 1 else
                      "<y, " + _vec(b) + ">")  # fmt: skip
    return {
        "u": (base[0] + s).cpu(),
        "v": (base[1] + s).cpu(),
        "g_gap": g_gap.clamp(min=0).cpu(),
        "f": fval.cpu(),
        "set": (in_plane + base).cpu(),
        "y_star": (basis @ y_star).cpu(),
        "labels": labels,
    }


def draw(data: dict[str, Any], path: Path, title: str) -> None:
    """Heatmap of :math:`g - g^*` (log scale), level sets of ``f``, S(x) and y*(x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    gap = data["g_gap"].numpy()
    vmax = float(gap.max())
    vmin = max(vmax * 1e-6, float(gap[gap > 0].min()) if (gap > 0).any() else vmax * 1e-6)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=120)
    mesh = ax.pcolormesh(data["u"].numpy(), data["v"].numpy(), gap.clip(min=vmin),
                         norm=LogNorm(vmin=vmin, vmax=vmax), cmap="viridis",
                         shading="auto")  # fmt: skip
    fig.colorbar(mesh, ax=ax, label="g(x, y) − g*(x)   (log scale)")
    ax.contour(data["u"].numpy(), data["v"].numpy(), data["f"].numpy(), levels=12,
               colors="white", linewidths=0.7, alpha=0.7, linestyles="dashed")  # fmt: skip
    pts = data["set"].numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=6 if len(pts) > 1 else 60, color="tab:red",
               label="S(x)", zorder=3)  # fmt: skip
    ys = data["y_star"].numpy()
    ax.scatter([ys[0]], [ys[1]], marker="*", s=320, color="gold", edgecolors="black",
               linewidths=1.0, label="y*(x)", zorder=4)  # fmt: skip
    ax.plot([], [], color="white", linestyle="dashed", label="level sets of f(x, ·)")
    ax.set_xlabel(data["labels"][0])
    ax.set_ylabel(data["labels"][1])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=10)
    leg = ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    leg.get_frame().set_facecolor("lightgray")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # an explicit format: without one matplotlib would write FILE.png for FILE
    fig.savefig(path, format=path.suffix[1:].lower() or "png")
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    discover(args.plugin)
    problem = build_problem(args.problem, args.params)
    path = Path(args.out) if args.out else Path("results") / "show" / f"{problem.name}.png"
    if path.suffix and path.suffix[1:].lower() not in PICTURE_FORMATS:
        known = ", ".join("." + f for f in PICTURE_FORMATS)
        raise UserError(f"bad value for --out: {path} (suffix one of {known}, or none for PNG)")
    x = upper_point(problem, args.x)
    print(describe(problem, x, "given by --x" if args.x else "initial x of seed 0"))
    data = picture_data(problem, x)
    if data is None:
        print(f"no picture: dim_y = {problem.dim_y} and S(x) does not lie in a plane "
              "(plot_plane)")  # fmt: skip
        return 0
    xs = ", ".join(f"{v:.3g}" for v in x[0].tolist())
    extra = "" if problem.dim_y == 2 else f" (plane slice of R^{problem.dim_y})"
    draw(data, path, f"{problem.name}: g(x, ·) at x = ({xs}){extra}")
    print(f"picture: {path}")
    return 0
