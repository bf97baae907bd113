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

Faults. A batch whose worker dies (kill -9, the OOM killer, a lost Dask worker, a
cancelled Slurm job) is recorded as ``failed`` with a one-line reason, so the next
``run`` retries it; every other batch completes. The process pool finds the batch by
the exit status of the worker that ran it (the pool's other workers are terminated by
:mod:`concurrent.futures` when one dies, so their batches are resubmitted to a fresh
pool). Dask blames a lost worker on every batch it held, queued ones too, so a batch
that never started on it is resubmitted (once) instead. Pool workers exit when the main
process dies (a thread polls the parent pid), so a killed ``run`` leaves no process
holding memory.

BLAS threads: every worker process would by default start one BLAS/OpenMP thread per
core, so ``workers`` processes oversubscribe the machine ``workers``-fold. Workers
therefore run ``cores // workers`` torch threads (at least one), set once per worker;
a batch that runs in the main process (submitit's ``debug`` cluster) sets them for
itself only (:func:`bibench.threads.torch_threads`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import platform
import queue as queue_lib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bibench.config import Budget, RunSpec
from bibench.errors import UserError
from bibench.registry import discover, framework_hash, get_algorithm, get_problem, source_hash
from bibench.runner import execute_batch, failed_frames, resolve_device
from bibench.schedule import timed
from bibench.threads import torch_threads

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
    main_pid: int = 0  # the main process (submitit's debug cluster runs batches in it)

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
            main_pid=os.getpid(),
        )


_prepared: WorkerSetup | None = None
_worker_device: str | None = None
_started: Any = None  # the pool's queue of (ticket, pid): which worker runs which batch
PARENT_POLL = 0.5  # seconds between a pool worker's checks that the main process lives
POOL_BREAKS = 2  # a batch pending through this many pool breaks is recorded as failed


def _exit_with_parent() -> None:
    """Exit this worker as soon as the process that started it is gone (a killed main
    process must not leave workers computing and holding memory)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="bibench-parent-watch", daemon=True).start()


def _pool_worker(setup: WorkerSetup, devices: Any = None, started: Any = None) -> None:
    """Process-pool initialiser: follow the parent, report batches, then :func:`_prepare`."""
    global _started
    _started = started
    _exit_with_parent()
    _prepare(setup, devices)


def _prepare(setup: WorkerSetup, devices: Any = None) -> None:
    """Worker initialiser (idempotent): plugins, dtype, threads (in a worker process, for
    good), and a device from ``devices`` (a queue of device names, one taken per worker)."""
    global _prepared, _worker_device
    if devices is not None:
        _worker_device = devices.get()
        if _worker_device.startswith("cuda"):
            torch.cuda.set_device(torch.device(_worker_device))
    if _prepared == setup:
        return
    discover(list(setup.plugins))
    torch.set_default_dtype(getattr(torch, setup.default_dtype))
    if setup.threads and os.getpid() != setup.main_pid:
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
            "framework_source": framework_hash(),
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
        if item.get("framework_source", framework_hash()) != framework_hash():
            raise UserError(
                f"bibench on worker {platform.node()} differs from the main process's; "
                "workers need the same checkout"
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


def run_payload(
    payload: Payload, device: str | None, setup: WorkerSetup, ticket: int | None = None
) -> list[pd.DataFrame]:
    """The worker's entry point: one batch, given as plain data (``ticket``: its number in
    the process pool, reported before it starts)."""
    _prepare(setup)
    if _started is not None and ticket is not None:
        _started.put((ticket, os.getpid()))
    device = device or _worker_device or "cpu"
    # in the main process, the thread count is the batch's only (bibench.threads)
    threads = setup.threads if os.getpid() == setup.main_pid else 0
    with torch_threads(threads), timed():  # timed: the pool's idle fraction, when asked for
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

    def map(self, batches: Iterable[list[RunSpec]]) -> Iterator[BatchResult]:
        """Run ``batches``, taken from the iterable as workers free up (the sweep claims a
        batch when it hands it over)."""
        raise NotImplementedError


def _local_device(device: str) -> torch.device:
    """``device`` resolved here, or the CPU where this host lacks it (remote workers)."""
    try:
        return resolve_device(device)
    except UserError:
        return torch.device("cpu")


class SerialExecutor(Executor):
    """Batches one after another in this process (the default). ``on_progress``, if set,
    receives the running batch's oracle calls (see :func:`bibench.runner.execute_batch`);
    the other executors report per batch only (their workers are other processes)."""

    on_progress: Callable[[int], None] | None = None

    def check(self) -> None:
        if self.devices:
            raise UserError("--devices needs a parallel executor (--executor processes)")

    def map(self, batches: Iterable[list[RunSpec]]) -> Iterator[BatchResult]:
        device = resolve_device(self.device)
        for batch in batches:
            yield batch, execute_batch(batch, device, self.on_progress)


class ProcessExecutor(Executor):
    """A local pool of ``workers`` spawned processes (fork is unsafe once torch has
    started its thread pools); with ``devices``, one worker per device."""

    def memory_share(self) -> tuple[torch.device, int]:
        if self.devices:
            return _local_device(self.devices[0]), 1
        return _local_device(self.device), self.workers

    def map(self, batches: Iterable[list[RunSpec]]) -> Iterator[BatchResult]:
        source = iter(batches)
        retry: collections.deque[tuple[list[RunSpec], int]] = collections.deque()
        tickets = iter(range(1 << 62))
        ctx = multiprocessing.get_context("spawn")
        device = None if self.devices else self.device
        while True:
            devices = None
            if self.devices:
                devices = ctx.Queue()
                for dev in self.devices:
                    devices.put(dev)
            started = ctx.Queue()
            pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_worker,
                                          initargs=(self.setup, devices, started))  # fmt: skip
            # ticket -> (batch, pool breaks it went through)
            inflight: dict[cf.Future, tuple[int, list[RunSpec], int]] = {}
            try:
                while True:
                    while len(inflight) < 2 * self.workers:  # the next batch ready to go
                        if retry:
                            item = retry.popleft()
                        elif (batch := next(source, None)) is not None:
                            item = (batch, 0)
                        else:
                            break
                        ticket = next(tickets)
                        fut = pool.submit(run_payload, to_payload(item[0]), device, self.setup,
                                          ticket)  # fmt: skip
                        inflight[fut] = (ticket, *item)
                    if not inflight:
                        pool.shutdown()
                        return
                    done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                    if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                        break
                    for fut in done:
                        _, batch, _ = inflight.pop(fut)
                        yield batch, fut.result()
            except BaseException:  # Ctrl-C, a failed write, a UserError: stop every worker
                _terminate(pool)
                raise
            # a worker died: the pool is broken and every pending batch with it
            processes = dict(getattr(pool, "_processes", None) or {})
            cf.wait(inflight)
            pool.shutdown(wait=True)
            pids = _drain(started)
            for fut, (ticket, batch, breaks) in inflight.items():
                if not isinstance(fut.exception(), BrokenProcessPool):
                    yield batch, fut.result()  # finished before the break (or its own error)
                    continue
                code = _exitcode(processes.get(pids.get(ticket, -1)))
                if code is not None and code not in (0, -signal.SIGTERM):
                    why = f"worker process {pids[ticket]} died ({_describe(code)})"
                    yield batch, failed_frames(batch, device or "cpu", why)
                elif breaks + 1 >= POOL_BREAKS:
                    why = "a worker process died while this batch was pending, twice"
                    yield batch, failed_frames(batch, device or "cpu", why)
                else:
                    retry.append((batch, breaks + 1))


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop ``pool``'s workers now (shutdown alone waits for the running batches)."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _drain(started: Any) -> dict[int, int]:
    """ticket -> pid of the worker that ran it, from the pool's report queue."""
    pids = {}
    while True:
        try:
            ticket, pid = started.get(timeout=0.5)
        except (queue_lib.Empty, OSError, EOFError):
            return pids
        pids[ticket] = pid


def _exitcode(proc: Any) -> int | None:
    return None if proc is None else proc.exitcode


def _describe(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = "; out of memory?" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


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

    def map(self, batches: Iterable[list[RunSpec]]) -> Iterator[BatchResult]:
        from distributed import Client, LocalCluster, as_completed
        from distributed.scheduler import KilledWorker

        batches = list(batches)
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

            def submit(batch: list[RunSpec]) -> Any:
                payload = to_payload(batch)
                return client.submit(_dask_payload, payload, self.device, self.setup, pure=False)

            # future -> (batch, KilledWorker errors it had while never running)
            pending = {submit(b): (b, 0) for b in batches}
            completed = as_completed(pending)
            for future in completed:
                batch, kills = pending.pop(future)
                try:
                    frames = future.result()
                except KilledWorker as exc:  # the workers that held it died (retried by Dask)
                    # Dask also blames a batch queued on a dying worker: resubmit one
                    # that never ran (once; its start may also be the event that was lost)
                    if kills + 1 < POOL_BREAKS and not _was_running(client, future.key):
                        retry = submit(batch)
                        pending[retry] = (batch, kills + 1)
                        completed.add(retry)
                        continue
                    frames = failed_frames(batch, "cpu", _one_line(exc))
                yield batch, frames
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


DASK_EVENTS = "bibench-batch"  # the scheduler's event topic: ("start" | "end", task key)


def _dask_payload(payload: Payload, device: str | None, setup: WorkerSetup) -> list[pd.DataFrame]:
    """:func:`run_payload` on a Dask worker, logging its start and end to the scheduler,
    so a lost worker is blamed on the batch that was running on it."""
    from distributed import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    worker.log_event(DASK_EVENTS, ("start", key))
    try:
        return run_payload(payload, device, setup)
    finally:
        worker.log_event(DASK_EVENTS, ("end", key))


def _was_running(client: Any, key: Any) -> bool:
    """Whether the task ``key`` started on a worker and never ended (it was running when
    its worker died)."""
    events = [msg for _, msg in client.get_events(DASK_EVENTS) if msg[1] == key]
    return sum(e[0] == "start" for e in events) > sum(e[0] == "end" for e in events)


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

    def map(self, batches: Iterable[list[RunSpec]]) -> Iterator[BatchResult]:
        import submitit
        from submitit.core.utils import UncompletedJobError

        batches = list(batches)
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
                    try:
                        frames = job.result()
                    except UncompletedJobError:  # cancelled, timed out, killed, node lost
                        # (the error's first line names only the missing result file)
                        why = (f"submitit job {job.job_id} ended without a result "
                               f"(state {job.state}); its logs are in {folder}")  # fmt: skip
                        frames = failed_frames(b, "cpu", why)
                    yield b, frames
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
