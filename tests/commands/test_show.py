"""``bibench show``: printed formulas with parameter values, the PNG, and the data it draws."""

from __future__ import annotations

import matplotlib.image
import pytest
import torch

from bibench.cli import main
from bibench.commands.show import build_problem, picture_data, upper_point


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_prints_formulas_with_values_and_writes_a_png(tmp_path, capsys):
    png = tmp_path / "hat.png"
    code, out, _ = run_cli(capsys, "show", "hat", "--params", "dim_x=2,dim_y=2,radius=0.7",
                           "--out", png)  # fmt: skip
    assert code == 0
    assert "radius r0 = 0.7" in out and "dim_y = 2" in out and "k = 1" in out  # formula text
    assert "r(x) = 0.7 exp(0.3 sin(w.x))" in out
    assert "radius = 0.7" in out  # the parameter list
    problem = build_problem("hat", "dim_x=2,dim_y=2,radius=0.7")
    x = upper_point(problem, None)
    assert f"Phi(x) = {problem.phi(x).item():.12g}" in out
    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (648, 768)  # 6.4 x 5.4 inches at 120 dpi
    assert image[..., :3].std() > 0.05


def test_show_data_puts_y_star_and_the_set_on_the_circle():
    problem = build_problem("hat", "dim_x=2,dim_y=2,radius=0.7")
    x = upper_point(problem, "0.4,-1.2")
    data = picture_data(problem, x)
    mv = problem.moving(x)
    c, r = mv.c[0], mv.r[0]
    assert abs(torch.linalg.vector_norm(data["y_star"] - c) - r) < 1e-12
    ring = torch.linalg.vector_norm(data["set"] - c, dim=-1) - r
    assert len(data["set"]) == 600 and ring.abs().max() < 1e-12
    # y* is the point of the drawn set with the smallest f
    f_set = problem.f(x.expand(600, -1), data["set"])
    assert problem.f(x, data["y_star"][None]).item() <= f_set.min().item() + 1e-12
    # the heatmap is g - g* >= 0 on a window containing the whole circle
    assert data["g_gap"].min() >= 0
    assert data["u"][0] < c[0] - r and data["u"][-1] > c[0] + r
    assert data["v"][0] < c[1] - r and data["v"][-1] > c[1] + r


def test_show_draws_the_plane_y_b_equals_e_for_k_1_in_higher_dimension():
    problem = build_problem("hat", "dim_x=3,dim_y=5,k=1")
    x = upper_point(problem, None)
    data = picture_data(problem, x)
    mv = problem.moving(x)
    assert len(data["set"]) == 600  # all of S(x) = S^1 x {e(x)} lies in the plane
    assert abs(torch.linalg.vector_norm(data["y_star"] - mv.c[0]) - mv.r[0]) < 1e-12
    assert data["labels"] == ["y1", "y2"]


def test_show_of_hat_saddle_draws_the_ring_around_the_isolated_minimiser():
    problem = build_problem("hat_saddle", "")
    x = upper_point(problem, "-0.2")
    data = picture_data(problem, x)
    t = problem.root(x)[0, 0]
    assert (data["y_star"] - torch.stack([t, torch.zeros(())])).abs().max() < 1e-15
    assert (data["set"] - data["y_star"]).abs().max() < 1e-15  # S(x) is that single point
    assert data["u"][0] == -1.6 and data["u"][-1] == 1.6


def test_show_without_a_plane_prints_no_picture(tmp_path, capsys):
    png = tmp_path / "hat10.png"
    code, out, _ = run_cli(capsys, "show", "hat", "--out", png)
    assert code == 0 and "no picture" in out and not png.exists()
    assert "dim_y = 10, k = 9" in out


def test_show_at_a_given_x(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "show", "hat_kink", "--x", "0.25", "--out",
                           tmp_path / "k.png")  # fmt: skip
    assert code == 0
    assert "at x = [0.25] (given by --x)" in out
    assert "Phi(x) = 0.28125" in out  # (|x| - 1)^2 / 2
    assert "|grad Phi(x)| = 0.75" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["show", "nosuch"], "unknown problem 'nosuch'"),
        (["show", "hat", "--params", "dim_y=2,k=5"], "k must be in"),
        (["show", "hat", "--params", "dim_q=2"], "'dim_q'"),
        (["show", "hat", "--x", "1,2"], "--x"),
        (["show", "hat", "--x", "a,b,c,d"], "--x"),
    ],
)
def test_show_user_errors_are_one_line(capsys, args, needle):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bibench: error:") and needle in lines[0]


@pytest.mark.parametrize(("name", "magic"), [("pic", b"\x89PNG"), ("pic.pdf", b"%PDF"),
                                             ("pic.svg", b"<?xml")])  # fmt: skip
def test_show_out_writes_exactly_the_given_path(tmp_path, capsys, name, magic):
    path = tmp_path / name
    code, out, _ = run_cli(capsys, "show", "hat", "--params", "dim_x=2,dim_y=2", "--out", path)
    assert code == 0 and f"picture: {path}\n" in out
    assert path.read_bytes()[: len(magic)] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # not pic.png beside pic


def test_show_out_with_an_unknown_suffix_is_refused_before_drawing(tmp_path, capsys):
    code, out, err = run_cli(capsys, "show", "hat", "--out", tmp_path / "pic.jpgg")
    assert code == 2 and "bad value for --out" in err and ".png, .pdf, .svg" in err
    assert out == "" and list(tmp_path.iterdir()) == []
