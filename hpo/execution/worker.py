"""A worker process of a :class:`~hpo.execution.pool.WorkerPool`: loads the study's payload once, then runs
every trial it is sent and reports epochs (waiting for the pruning decision) and results over its pipes.

Started as ``python -m hpo.execution.worker READ_FD WRITE_FD`` by the pool."""

from __future__ import annotations

import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from hpo.errors import HpoError


def _limit_memory(limit_mb: int) -> None:
    """Cap the data segment (heap and anonymous mappings) so runaway allocations raise MemoryError here."""
    import resource

    used_mb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            used_mb = int(line.split()[1]) // 1024
    if used_mb >= limit_mb:
        raise HpoError(f"executor.memory_limit_mb={limit_mb} is below what a worker uses after loading the study "
                       f"({used_mb} MB); raise it")
    limit = limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _load_payload(path: Path) -> dict:
    """The study's payload, from the pool's private folder only: owned by this user, closed to others."""
    folder = path.parent.stat()
    if folder.st_uid != os.getuid() or folder.st_mode & 0o077 or path.stat().st_uid != os.getuid():
        raise HpoError(f"{path}: the payload must lie in a folder only this user can open (0700); not loading it")
    with open(path, "rb") as f:
        return pickle.load(f)


def _child_main(read_fd: int, write_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the study process decides when workers stop
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    try:
        meta = inbox.recv()
        for p in reversed(meta["sys_path"]):
            if p not in sys.path:
                sys.path.insert(0, p)
        fraction = os.environ.get("HPO_TORCH_MEMORY_FRACTION")
        payload = _load_payload(Path(meta["payload"]))
        import keras

        if fraction and keras.backend.backend() == "torch":
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_per_process_memory_fraction(float(fraction))
        build = payload["build"]
        if isinstance(build, str):
            from hpo.space.builders import get_builder

            build = get_builder(build)
        if meta.get("memory_limit_mb"):
            _limit_memory(int(meta["memory_limit_mb"]))
    except Exception as exc:  # report instead of dying silently
        outbox.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            task = inbox.recv()
        except EOFError:
            return
        if task is None:
            return
        for result in _run_task(task, payload, build, inbox, outbox):
            outbox.send(("done", result))


def _listener(number: int, inbox: Connection, outbox: Connection) -> Callable[[int, Mapping[str, float]], None]:
    """Reports trial ``number``'s epoch to the study and waits for its pruning decision."""
    from hpo.errors import TrialPruned

    def listener(epoch: int, logs: Mapping[str, float]) -> None:
        outbox.send(("epoch", number, epoch, {k: float(v) for k, v in logs.items()}))
        prune, message = inbox.recv()
        if prune:
            raise TrialPruned(message)

    return listener


def _run_task(task: Any, payload: dict, build: Any, inbox: Connection, outbox: Connection) -> Iterator[Any]:
    """The results of one task, as each finishes: a trial, or a pack's members (those sharing an architecture
    trained as one packed model, as :func:`hpo.study.trials.run_batch` does in the study's process)."""
    from hpo.execution.pool import PackTask
    from hpo.execution.trial import run_trial

    if not isinstance(task, PackTask):
        extra, board = [], None
        if task.histograms:
            from hpo.tracking.tensorboard import TrialBoard, histogram_callback

            board = TrialBoard(Path(payload["run_dir"]), task.number, task.params, session=False)
            extra.append(histogram_callback(board))
        result = run_trial(number=task.number, params=task.params, seed=task.seed, build=build,
                           space=payload["space"], splits=payload["splits"], settings=payload["settings"],
                           trial_dir=Path(task.trial_dir), listener=_listener(task.number, inbox, outbox),
                           epochs=task.epochs, extra_callbacks=extra, resume=task.resume,
                           checkpoint=task.checkpoint)
        if board is not None:
            board.writer.close()
        yield result
        return
    from hpo.execution.packed import group, shape_key, train_pack

    for grp in group(task.tasks, lambda t: shape_key(t.params, t.epochs)):
        if len(grp) == 1:
            yield from _run_task(grp[0], payload, build, inbox, outbox)
            continue
        results = train_pack(numbers=[t.number for t in grp], params=[t.params for t in grp],
                             seeds=[t.seed for t in grp], listeners=[_listener(t.number, inbox, outbox) for t in grp],
                             trial_dirs=[Path(t.trial_dir) for t in grp], splits=payload["splits"],
                             settings=payload["settings"], epochs=grp[0].epochs)
        for res in results:
            res.pack = [t.number for t in grp]
            yield res

if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
