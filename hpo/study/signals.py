"""SIGTERM and Ctrl-C during a study: raised where Python would lose them, at the next epoch or trial."""

from __future__ import annotations

from typing import Any

from hpo.errors import StudyInterrupted

_SIGNALLED: list[BaseException] = []  # the interrupt a signal raised during this study, kept until it ends


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
        _SIGNALLED.append(StudyInterrupted(f"stopped by signal {signum}"))
        raise StudyInterrupted(f"stopped by signal {signum}")

    def on_int(signum: int, frame: Any) -> None:
        _SIGNALLED.append(KeyboardInterrupt())
        raise KeyboardInterrupt()

    return signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)


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
