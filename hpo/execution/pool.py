"""Trials in worker processes: one pool per study, workers pinned to GPUs (or the CPU), replaced when they die.

The driver stays in the study's process (ask/tell, tracking, pruning decisions);
each worker is a fresh Python process that loads the study's builder, space and
data once and then runs :func:`hpo.execution.trial.run_trial` for every trial it is sent.
A worker that dies (segfault, out-of-memory kill, ``kill -9``) ends its trial as
FAILED with the reason and is replaced; its GPU memory comes back because its
process ended, which is the only reliable way to get it back from TensorFlow or
XLA (keras-tuner #395, optuna #3050).

Workers are started with ``subprocess`` (``python -m hpo.execution.worker``) rather than
``multiprocessing``'s spawn, so a user's script without an ``if __name__ ==
"__main__"`` guard is never re-run in the workers; messages travel as pickles
over two pipes (``multiprocessing.connection.Connection``). The study's payload (builder,
space, data) is written once, for every worker to load, into a private temporary folder
(mode 0700, outside the run directory): whoever can write to a run directory must not be
able to hand a worker a pickle.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Mapping

from hpo.errors import ConfigError, HpoError
from hpo.execution.continuation import Resume
from hpo.results import TrialResult, TrialState

log = logging.getLogger(__name__)

# Exceptions after which a worker's allocator may be in a bad state: the worker is replaced.
_OOM_MARKERS = ("MemoryError", "ResourceExhausted", "RESOURCE_EXHAUSTED", "out of memory", "OutOfMemory")


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a GPU index, or the CPU (``gpu is None``)."""

    index: int
    gpu: int | None
    env: Mapping[str, str]

    def describe(self) -> str:
        return f"gpu:{self.gpu}" if self.gpu is not None else "cpu"


@dataclass
class Task:
    """One trial sent to a worker."""

    number: int
    params: dict[str, Any]
    seed: int
    trial_dir: str
    epochs: int | None = None
    histograms: bool = False
    resume: Resume | None = None  # the checkpoint it continues (hpo.execution.continuation)
    checkpoint: bool = False  # keep its own checkpoint for a later trial


@dataclass
class PackTask:
    """Trials sent to one worker together (``executor.pack``): those sharing an architecture train as one packed
    model there, the others one by one; each member's epochs and result come back under its own number."""

    tasks: list[Task]

    @property
    def number(self) -> int:
        return self.tasks[0].number


def members(task: Task | PackTask) -> list[Task]:
    """The trials of a task: itself, or a pack's members."""
    return list(task.tasks) if isinstance(task, PackTask) else [task]


@dataclass
class EpochEvent:
    number: int
    epoch: int
    logs: dict[str, float]


@dataclass
class DoneEvent:
    number: int
    result: TrialResult


# -- planning ---------------------------------------------------------------------------------
def visible_gpus() -> list[int]:
    """GPU indices this process may use, without importing a framework (``nvidia-smi``)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip() in ("", "-1"):
        return []
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    found = [int(x) for x in out.stdout.split() if x.strip().isdigit()] if out.returncode == 0 else []
    if env:
        wanted = [int(x) for x in env.split(",") if x.strip().isdigit()]
        return [g for g in found if g in wanted]
    return found


def plan_slots(section: Any) -> list[Slot] | None:
    """The worker slots an ``executor`` config section asks for; None means run trials in this process."""
    if section.mode == "inprocess":
        return None
    gpus = visible_gpus() if section.gpus is None else list(section.gpus)
    if section.gpus:
        missing = sorted(set(section.gpus) - set(visible_gpus()))
        if missing:
            raise ConfigError("executor.gpus", f"GPU(s) {missing} are not visible on this machine "
                                               f"(visible: {visible_gpus() or 'none'}); fix the list or remove it")
    if section.mode == "auto" and not gpus and section.cpu_workers == 1:
        return None
    slots: list[Slot] = []
    if gpus:
        share = 0.9 / section.workers_per_gpu
        for g in gpus:
            for _ in range(section.workers_per_gpu):
                slots.append(Slot(len(slots), g, {
                    "CUDA_VISIBLE_DEVICES": str(g),
                    # TensorFlow: grow instead of taking the whole card.
                    "TF_FORCE_GPU_ALLOW_GROWTH": "true",
                    # JAX/XLA: no up-front grab; at most this worker's share of the card.
                    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                    "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{share:.3f}",
                    "HPO_TORCH_MEMORY_FRACTION": f"{share:.3f}",
                }))
    else:
        n = section.cpu_workers
        threads = section.threads_per_worker or max(1, (os.cpu_count() or 1) // n)
        for _ in range(n):
            slots.append(Slot(len(slots), None, {
                "CUDA_VISIBLE_DEVICES": "",
                "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(min(threads, 2)),
            }))
    return slots


def leave_card_to_workers(slots: list[Slot] | None) -> None:
    """With workers on GPUs, this (the study's) process takes no preallocated share of a card either: JAX and
    TensorFlow read these when they first use a GPU, so this helps when the study has not touched one yet."""
    if slots and any(s.gpu is not None for s in slots):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")


# -- the parent's side --------------------------------------------------------------------------
@dataclass
class _Worker:
    slot: Slot
    proc: subprocess.Popen[bytes]
    inbox: Connection  # parent reads
    outbox: Connection  # parent writes
    started: float
    ready: bool = False
    task: Task | PackTask | None = None
    pending: dict[int, Task] = field(default_factory=dict)  # the task's trials whose result has not come back
    trials_done: int = 0
    retire: bool = False
    awaiting_reply: bool = False


@dataclass
class WorkerPool:
    """Worker processes over ``slots``; the study loop submits tasks and polls for events."""

    slots: list[Slot]
    payload: dict[str, Any]
    recycle_after: int | None = 50
    memory_limit_mb: int | None = None
    start_timeout_s: float = 300.0
    workers: dict[int, _Worker] = field(default_factory=dict)
    _failed_starts: dict[int, int] = field(default_factory=dict)
    _payload_path: Path | None = None

    def start(self) -> None:
        import cloudpickle  # ships with MLflow; pickles a user's builder defined in a script or notebook

        # mkdtemp makes the folder readable and writable by its owner only (0700); the file is created
        # exclusively inside it, so nobody else can replace it before a worker loads it.
        path = Path(tempfile.mkdtemp(prefix="hpo-payload-")) / "payload.pkl"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            cloudpickle.dump(self.payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        self._payload_path = path
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env.update(slot.env)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
        try:  # workers' prints go where this process's descriptor 2 goes (`hpo run`: its hpo.log), not stdout
            os.fstat(2)
            out: int | None = 2
        except OSError:
            out = None
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo.execution.worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL, stdout=out,
            start_new_session=True,  # Ctrl-C reaches the study, which stops its workers itself
        )
        os.close(to_child_r)
        os.close(from_child_w)
        w = _Worker(slot, proc, Connection(from_child_r, writable=False), Connection(to_child_w, readable=False),
                    time.monotonic())
        w.outbox.send({"payload": str(self._payload_path), "memory_limit_mb": self.memory_limit_mb,
                       "sys_path": list(sys.path)})
        self.workers[slot.index] = w

    def idle(self) -> list[int]:
        """Slots whose worker is ready and has no task."""
        return [i for i, w in self.workers.items() if w.ready and w.task is None and not w.retire]

    def busy(self) -> int:
        return sum(1 for w in self.workers.values() if w.task is not None)

    def submit(self, slot: int, task: Task | PackTask) -> None:
        w = self.workers[slot]
        assert w.ready and w.task is None
        w.task = task
        w.pending = {t.number: t for t in members(task)}
        w.outbox.send(task)

    def _running(self, number: int) -> _Worker | None:
        """The worker whose task holds trial ``number`` (alone or in a pack), until its result came back."""
        return next((w for w in self.workers.values() if number in w.pending), None)

    def reply(self, number: int, prune: bool, message: str = "") -> None:
        """Answer a worker waiting after an epoch report: go on, or stop as pruned."""
        w = self._running(number)
        if w is not None and w.awaiting_reply:
            w.awaiting_reply = False
            try:
                w.outbox.send((prune, message))
            except (BrokenPipeError, OSError):
                pass  # it died; poll() reports it

    def kill(self, number: int) -> bool:
        """Kill the worker running trial ``number`` (used by tests and by trial timeouts; a pack's other members
        fail with it); True if found."""
        w = self._running(number)
        if w is not None:
            w.proc.kill()
        return w is not None

    def poll(self, timeout: float = 1.0) -> list[EpochEvent | DoneEvent]:
        """Events from the workers; a dead worker's trial comes back as a FAILED result."""
        events: list[EpochEvent | DoneEvent] = []
        conns = {w.inbox: w for w in self.workers.values()}
        for conn in wait(list(conns), timeout=timeout):
            w = conns[conn]
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                code = w.proc.wait()
                reason = _exit_reason(code)
                for t in w.pending.values():  # every trial of its task without a result (a whole pack)
                    res = TrialResult(number=t.number, params=t.params, seed=t.seed,
                                      state=TrialState.FAILED, error=f"worker process on {w.slot.describe()} died: {reason}")
                    log.warning("trial %d: %s; starting a new worker", t.number, res.error)
                    events.append(DoneEvent(t.number, res))
                if w.task is None and not w.ready:
                    self._failed_starts[w.slot.index] = self._failed_starts.get(w.slot.index, 0) + 1
                    if self._failed_starts[w.slot.index] >= 3:
                        self.close()
                        raise HpoError(f"worker processes on {w.slot.describe()} fail to start ({reason}); "
                                       "run with executor.mode: inprocess to see the error in this process")
                self._drop(w, respawn=True)
                continue
            kind = msg[0]
            if kind == "ready":
                w.ready = True
                self._failed_starts.pop(w.slot.index, None)
            elif kind == "error":  # the worker could not load the study; it exits
                self.close()
                raise HpoError(f"a worker on {w.slot.describe()} could not start: {msg[1]}")
            elif kind == "epoch":
                w.awaiting_reply = True
                events.append(EpochEvent(msg[1], msg[2], msg[3]))
            elif kind == "done":
                res = msg[1]
                w.pending.pop(res.number, None)
                events.append(DoneEvent(res.number, res))
                w.trials_done += 1
                if w.pending:  # the pack's other members are still training
                    continue
                w.task = None
                oom = res.error and any(m in res.error for m in _OOM_MARKERS)
                if oom or (self.recycle_after is not None and w.trials_done >= self.recycle_after):
                    w.retire = True
                    self._drop(w, respawn=True, graceful=True)
        now = time.monotonic()
        for w in list(self.workers.values()):
            if not w.ready and now - w.started > self.start_timeout_s:
                self.close()
                raise HpoError(f"a worker on {w.slot.describe()} did not start within {self.start_timeout_s:.0f} s "
                               "(executor.start_timeout_s)")
        return events

    def _drop(self, w: _Worker, *, respawn: bool, graceful: bool = False) -> None:
        if graceful:
            try:
                w.outbox.send(None)
            except (BrokenPipeError, OSError):
                pass
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        for c in (w.inbox, w.outbox):
            c.close()
        del self.workers[w.slot.index]
        if respawn:
            self._spawn(w.slot)

    def close(self, grace_s: float = 5.0) -> None:
        """Stop every worker (a running trial is abandoned) and remove the payload's private folder."""
        for w in list(self.workers.values()):
            try:
                if w.task is None:
                    w.outbox.send(None)
                else:
                    w.proc.terminate()
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + grace_s
        for w in list(self.workers.values()):
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            for c in (w.inbox, w.outbox):
                c.close()
        self.workers.clear()
        if self._payload_path is not None:
            shutil.rmtree(self._payload_path.parent, ignore_errors=True)
            self._payload_path = None

    def pids(self) -> dict[int, int]:
        """Trial number -> pid of the worker running it."""
        return {n: w.proc.pid for w in self.workers.values() for n in w.pending}


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"
