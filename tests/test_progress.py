"""Progress inside a batch: execute_batch's callback, and the bar a serial sweep draws."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from bibench import config, runner
from bibench.runner import execute_batch, plan

SLOW_PLUGIN = '''
"""Lower-level gradient descent that sleeps 0.05 s a step (a test plugin)."""
import dataclasses, time
from bibench import Algorithm, HyperParams, State, register_algorithm


@dataclasses.dataclass(frozen=True)
class Hyper(HyperParams):
    lr_y: float = 1.0


@register_algorithm("slow_progress")
class Slow(Algorithm):
    """One counted call and a 0.05 s sleep a step (a test plugin)."""

    Hyper = Hyper

    def init(self, problem, oracle, x0, y0, rng):
        self.oracle = oracle
        return State(x0, y0)

    def step(self, state):
        time.sleep(0.05)
        y = state.y - self.hp.lr_y * self.oracle.grad_y_g(state.x, state.y)
        return State(state.x, y)
'''


def test_progress_reports_calls_with_stopped_runs_at_their_budget(monkeypatch):
    torch.set_default_dtype(torch.float64)
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 0.0)  # report before every step
    cfg = config.from_mapping({"problems": "quadratic", "algorithms": "aid_cg[lr_x=[0.1,50.0]]",
                               "budget": 20000})  # fmt: skip
    (batch,) = plan(config.expand(cfg))
    reports: list[int] = []
    frames = execute_batch(batch, "cpu", reports.append)
    steps = max(int(f["step"].iloc[-1]) for f in frames)
    assert len(reports) == steps  # one report before each step but the last
    assert reports == sorted(reports) and reports[-1] < 2 * 20000 <= reports[-1] + 24 * 2
    diverged = next(f for f in frames if f["status"].iloc[-1] == "diverged")
    at = int(diverged["step"].iloc[-1])  # the report of that loop pass counts it in full
    other = next(f for f in frames if f["status"].iloc[-1] == "done")
    calls_then = other.loc[other["step"] <= at, "oracle_calls"].max()
    assert reports[at] >= 20000 + calls_then
    assert reports[at - 1] < 20000  # before it stopped: its calls so far only


def test_a_serial_sweep_shows_progress_inside_a_batch(tmp_path):
    plugin = tmp_path / "slow_progress.py"
    plugin.write_text(SLOW_PLUGIN)
    # one batch of 2 runs, 100 steps of 0.05 s each: about 5 s
    cmd = [sys.executable, "-m", "bibench.cli", "run", "--problems", "quadratic",
           "--algorithms", "slow_progress", "--seeds", "2", "--budget", "100",
           "--plugin", str(plugin), "--out", str(tmp_path / "out")]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    text, seen_while_running = "", None
    deadline = time.time() + 300
    while time.time() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
        if not chunk:
            break
        text += chunk
        partial = [int(p) for p in re.findall(r"oracle calls:\s+(\d+)%\|", text)
                   if 0 < int(p) < 100]  # fmt: skip
        if partial and seen_while_running is None:
            seen_while_running = proc.poll() is None
    proc.wait()
    assert proc.returncode == 0, text
    assert seen_while_running, text  # a partial bar was drawn before the batch ended
    # the bar counts calls of the 2 runs (200) and shows an ETA
    assert re.search(r"oracle calls:\s+\d+%\|[^|]*\| \d+/200 \[\d\d:\d\d<\d\d:\d\d", text), text
