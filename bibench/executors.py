"""Executors: where lockstep batches run. Every executor yields, for each batch, the
frames :func:`bibench.runner.execute_batch` returns; the sweep (in the main process)
writes them. So the same runs give the same rows whichever executor ran them, and a
sweep resumes whatever executor wrote its finished runs.

========================  ====================================================
``serial`` (default)      batches one after another in this process
``processes``             a local pool of spawned processes
                          (:class:`concurrent.futures.ProcessPoolExecutor`);
                          with ``devices``, one worker pinned to each device
``dask``                  Dask distributed: a ``LocalCluster`` of ``workers``
                          processes, or the cluster at ``scheduler`` (an address)
``slurm``                 Slurm job arrays through submitit (``slurm`` options go
                          to ``AutoExecutor.update_parameters``; ``cluster: local``
                          or ``debug`` runs without Slurm)
========================  ====================================================

A batch travels to a worker as plain data (names, parameter dicts, seeds, the budget
and the run id computed here), because plugin classes live in modules that only
:func:`bibench.registry.discover` can import. Each worker discovers the same plugins
(the folders, entry points and the ``--plugin`` files), takes this process's default
torch dtype, and refuses to run a plugin whose source differs from the one the run id
was hashed with (a worker on another checkout would otherwise write mislabelled rows).

BLAS threads: every worker process would by default start one BLAS/OpenMP thread per
core, so ``workers`` processes oversubscribe the machine ``workers``-fold. Workers
therefore run ``cores // workers`` torch threads (at least one).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bibench.config import Budget, RunSpec
from bibench.errors import UserError
from bibench.registry import discover, get_algorithm, get_problem, source_hash
from bibench.runner import execute_batch, resolve_device
from bibench.schedule import timed

__all__ = [
    "EXECUTORS",
    "DaskExecutor",
    "Executor",
    "ProcessExecutor",
    "SerialExecutor",
    "SlurmExecutor",
    "WorkerSetup",
    "get_executor",
    "run_payload",
]

BatchResult = tuple[list[RunSpec], list[pd.DataFrame]]
Payload = list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to mirror the main process."""

    plugins: tuple[str, ...] = ()
    default_dtype: str = "float32"
    threads: int = 0  # torch threads (0: leave torch's default)

    @classmethod
    def here(
        cls, plugins: list[str] | tuple[str, ...] = (), workers: int = 1, threads: int = 0
    ) -> WorkerSetup:
        """This process's plugins and dtype; ``threads`` per worker (0: cores // workers)."""
        cores = os.cpu_count() or 1
        return cls(
            plugins=tuple(str(Path(p).resolve()) for p in plugins),
            default_dtype=str(torch.get_default_dtype()).removeprefix("torch."),
            threads=threads or max(1, cores // max(1, workers)),
        )


_prepared: WorkerSetup | None = None
_worker_device: str | None = None


def _prepare(setup: WorkerSetup, devices: Any = None) -> None:
    """Worker initialiser (idempotent): plugins, dtype, threads, and a device from
    ``devices`` (a queue of device names, one taken per worker)."""
    global _prepared, _worker_device
    if devices is not None:
        _worker_device = devices.get()
        if _worker_device.startswith("cuda"):
            torch.cuda.set_device(torch.device(_worker_device))
    if _prepared == setup:
        return
    discover(list(setup.plugins))
    torch.set_default_dtype(getattr(torch, setup.default_dtype))
    if setup.threads:
        torch.set_num_threads(setup.threads)
    _prepared = setup


def to_payload(batch: list[RunSpec]) -> Payload:
    """A batch as plain data (see the module docstring)."""
    return [
        spec.config()
        | {
            "run_id": spec.run_id,
            "problem_source": source_hash(get_problem(spec.problem)),
            "algorithm_source": source_hash(get_algorithm(spec.algorithm)),
        }
        for spec in batch
    ]


def from_payload(payload: Payload) -> list[RunSpec]:
    specs = []
    for item in payload:
        problem, algorithm = get_problem(item["problem"]), get_algorithm(item["algorithm"])
        for cls, key in ((problem, "problem_source"), (algorithm, "algorithm_source")):
            if source_hash(cls) != item[key]:
                raise UserError(
                    f"plugin '{cls.name}' on worker {platform.node()} differs from the "
                    "main process's; workers need the same checkout and --plugin files"
                )
        spec = RunSpec(
            item["problem"],
            problem.Params(**item["problem_params"]),
            item["algorithm"],
            algorithm.Hyper(**item["hyper"]),
            item["seed"],
            Budget(**item["budget"]),
        )
        spec.__dict__["run_id"] = item["run_id"]  # the main process's id (cached_property)
        specs.append(spec)
    return specs


def run_payload(payload: Payload, device: str | None, setup: WorkerSetup) -> list[pd.DataFrame]:
    """The worker's entry point: one batch, given as plain data."""
    _prepare(setup)
    device = device or _worker_device or "cpu"
    with timed():  # the pool's idle fraction (bibench.schedule), when asked for
        return execute_batch(from_payload(payload), resolve_device(device))


class Executor:
    """Runs batches; ``map`` yields ``(batch, frames)`` as batches complete.

    Args:
        device: device of every batch (``auto`` is resolved where the batch runs;
            workers pinned by ``devices`` use theirs).
        workers: worker processes (0: one per core, or one per device).
        plugins: the ``--plugin`` files, imported by every worker.
        devices: devices to spread workers over, one worker per device.
        scheduler: address of a running Dask scheduler.
        slurm: submitit options (``folder``, ``cluster``, and Slurm parameters).
        threads: torch threads per worker (0: cores // workers).
    """

    def __init__(
        self,
        device: str = "cpu",
        *,
        workers: int = 0,
        plugins: list[str] | tuple[str, ...] = (),
        devices: list[str] | None = None,
        scheduler: str | None = None,
        slurm: dict[str, Any] | None = None,
        threads: int = 0,
    ) -> None:
        self.device = device
        self.devices = list(devices or [])
        self.workers = workers or len(self.devices) or os.cpu_count() or 1
        if self.devices and workers not in (0, len(self.devices)):
            raise UserError(f"workers={workers} but {len(self.devices)} devices: one per device")
        self.scheduler = scheduler
        self.slurm = dict(slurm or {})
        self.setup = WorkerSetup.here(plugins, self.workers, threads)
        self.check()

    def check(self) -> None:
        """Raise a UserError for options this executor does not take."""

    def memory_share(self) -> tuple[torch.device, int]:
        """Where to measure memory for ``--batch-size auto`` (a device like the workers',
        seen from here), and how many batches share it at once."""
        return _local_device(self.device), 1

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        raise NotImplementedError


def _local_device(device: str) -> torch.device:
    """``device`` resolved here, or the CPU where this host lacks it (remote workers)."""
    try:
        return resolve_device(device)
    except UserError:
        return torch.device("cpu")


class SerialExecutor(Executor):
    """Batches one after another in this process (the default)."""

    def check(self) -> None:
        if self.devices:
            raise UserError("--devices needs a parallel executor (--executor processes)")

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        device = resolve_device(self.device)
        for batch in batches:
            yield batch, execute_batch(batch, device)


class ProcessExecutor(Executor):
    """A local pool of ``workers`` spawned processes (fork is unsafe once torch has
    started its thread pools); with ``devices``, one worker per device."""

    def memory_share(self) -> tuple[torch.device, int]:
        if self.devices:
            return _local_device(self.devices[0]), 1
        return _local_device(self.device), self.workers

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        if not batches:
            return
        ctx = multiprocessing.get_context("spawn")
        queue = None
        if self.devices:
            queue = ctx.Queue()
            for dev in self.devices:
                queue.put(dev)
        pool = cf.ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_prepare, initargs=(self.setup, queue)
        )
        device = None if self.devices else self.device
        try:
            futures = {
                pool.submit(run_payload, to_payload(b), device, self.setup): b for b in batches
            }
            for future in cf.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:  # Ctrl-C or a failed batch: do not wait for the others
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def _missing_extra(executor: str, package: str, extra: str) -> UserError:
    return UserError(f"executor '{executor}' needs {package}: pip install 'bibench[{extra}]'")


class DaskExecutor(Executor):
    """Dask distributed: the cluster at ``scheduler``, or a ``LocalCluster`` of
    ``workers`` single-threaded processes started (and stopped) by this executor."""

    def check(self) -> None:
        if self.devices:
            raise UserError("--devices is not supported with dask (use --executor processes)")
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise _missing_extra("dask", "Dask distributed", "dask") from None

    def memory_share(self) -> tuple[torch.device, int]:
        return _local_device(self.device), 1 if self.scheduler else self.workers

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        from distributed import Client, LocalCluster, as_completed

        if not batches:
            return
        cluster = None
        if self.scheduler:
            client = Client(self.scheduler)
        else:
            cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True,
                dashboard_address=None,
            )  # fmt: skip
            client = Client(cluster)
        try:
            futures = {
                client.submit(run_payload, to_payload(b), self.device, self.setup, pure=False): b
                for b in batches
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


class SlurmExecutor(Executor):
    """Slurm through submitit: one job per batch, submitted as one job array. ``slurm``
    options: ``folder`` (job logs, default ``submitit/``), ``cluster`` (``slurm``,
    ``local`` or ``debug``; default: Slurm when present, else local), ``poll`` (seconds
    between status checks), and any ``AutoExecutor.update_parameters`` key
    (``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ...)."""

    def check(self) -> None:
        if self.devices:
            raise UserError("--devices is not supported with slurm (ask Slurm for GPUs)")
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise _missing_extra("slurm", "submitit", "slurm") from None

    def map(self, batches: list[list[RunSpec]]) -> Iterator[BatchResult]:
        import submitit

        if not batches:
            return
        opts = dict(self.slurm)
        folder = opts.pop("folder", "submitit")
        cluster = opts.pop("cluster", None)
        poll = float(opts.pop("poll", 2.0))
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        try:
            executor.update_parameters(**opts)
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad slurm option: {exc}".splitlines()[0]) from None
        with executor.batch():
            jobs = [
                (executor.submit(run_payload, to_payload(b), self.device, self.setup), b)
                for b in batches
            ]
        pending = jobs
        while pending:
            done = [job.done() for job, _ in pending]
            for (job, b), finished in zip(pending, done):
                if finished:
                    yield b, job.result()
            pending = [p for p, finished in zip(pending, done) if not finished]
            if pending and not any(done):
                time.sleep(poll)


EXECUTORS: dict[str, type[Executor]] = {
    "serial": SerialExecutor,
    "processes": ProcessExecutor,
    "dask": DaskExecutor,
    "slurm": SlurmExecutor,
}


def get_executor(name: str, device: str, **options) -> Executor:
    if name not in EXECUTORS:
        raise UserError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")
    return EXECUTORS[name](device=device, **options)
