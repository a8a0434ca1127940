"""SIGTERM and Ctrl-C during a study: raised where Python would lose them, at the next epoch or trial."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from hpo.errors import StudyInterrupted

_SIGNALLED: list[BaseException] = []  # the interrupt a signal raised during this study, kept until it ends
_DEFERRING: list[bool] = []  # inside :func:`deferred`: a first signal is recorded, not raised


def install_signals() -> Any:
    """SIGTERM becomes StudyInterrupted and SIGINT KeyboardInterrupt, as usual, and each is also recorded.

    Python drops an exception raised while it runs a finalizer or weakref callback ("Exception ignored
    in ..."), and the garbage collector runs those at arbitrary points of training: a Ctrl-C landing
    there was lost and the study ran on to the end. :func:`raise_if_signalled` raises a recorded
    interrupt again at the next epoch or trial boundary."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    _SIGNALLED.clear()

    def on_term(signum: int, frame: Any) -> None:
        _record_or_raise(StudyInterrupted(f"stopped by signal {signum}"))

    def on_int(signum: int, frame: Any) -> None:
        _record_or_raise(KeyboardInterrupt())

    return signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)


def _record_or_raise(exc: BaseException) -> None:
    first = not _SIGNALLED
    _SIGNALLED.append(exc)
    if first and _DEFERRING:
        return  # raised by the caller's next raise_if_signalled, once the bookkeeping is whole
    raise type(exc)(*exc.args)


@contextmanager
def deferred() -> Iterator[None]:
    """A first Ctrl-C or SIGTERM inside is recorded and raised at the next :func:`raise_if_signalled`, not in
    the middle: recording a finished trial (result.json, the engine's tell, its MLflow run) or opening one is
    never cut halfway, which would leave a trial that is neither running nor finished. A second signal still
    raises at once, so a hung store cannot trap the user."""
    _DEFERRING.append(True)
    try:
        yield
    finally:
        _DEFERRING.pop()


def raise_if_signalled() -> None:
    """Raise the interrupt a signal raised earlier, if Python swallowed it (see :func:`install_signals`)."""
    if _SIGNALLED:
        exc = _SIGNALLED[0]
        raise type(exc)(*exc.args)


def restore_signals(previous: Any) -> None:
    """Put back the handlers :func:`install_signals` replaced."""
    import signal

    _SIGNALLED.clear()
    if previous is not None:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
