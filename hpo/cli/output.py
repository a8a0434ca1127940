"""What ``hpo run`` and ``hpo worker`` show: the project's own lines on the terminal, everything the libraries say
(TensorFlow/absl/XLA's C++ logs, third-party Python warnings, MLflow/alembic/SQLAlchemy log lines) in the run
directory's ``hpo.log``, and on the terminal too with ``--verbose``.

TensorFlow's C++ runtime writes its logs (oneDNN and absl banners, ``E0000 ... node_def_util.cc``) straight to
file descriptor 2, from threads Python does not see, before and while a study runs; the absl banner ignores
``TF_CPP_MIN_LOG_LEVEL``, and raising that level would drop those lines rather than keep them for ``hpo.log`` and
``-v``. So descriptor 2 itself is pointed at a pipe for the command's lifetime, and a thread copies what comes
through it to ``hpo.log`` (and to the terminal with ``-v``). Child processes (trial workers, the MLflow writer)
inherit descriptor 2, so their library output takes the same path. Python's ``sys.stderr`` becomes the saved
terminal, so the command's own messages (errors, the overfitting warning) still reach the user once.

Until the study's run directory is open, what arrives is held in memory: a study that fails to start leaves no
file behind, and its one-line error says why (rerun with ``-v`` to see the libraries' output)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import IO

LOG_NAME = "hpo.log"
# The loggers whose warnings are the project's own: shown on the terminal without --verbose.
OWN_LOGGERS = ("hpo", "ensembles", "search_spaces", "experiments", "__main__")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def quiet_library_environment() -> None:
    """Environment for this process and the processes it starts, set before TensorFlow or MLflow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO/WARNING off; errors still reach hpo.log
    # MLflow otherwise installs its own stderr handler (propagate=False) at import; its records then reach
    # the root logger's handlers below, which send them to hpo.log.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    # tqdm bars of MLflow's artifact downloads (the owner of a shared study fetches other workers' trials).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class _OwnRecords(logging.Filter):
    """The project's own warnings and errors, and Python warnings raised from its code."""

    def __init__(self) -> None:
        super().__init__()
        self._own_dirs = tuple(str(Path(__file__).resolve().parents[2] / d) + os.sep
                               for d in ("hpo", "ensembles", "search_spaces", "experiments"))

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        if record.name == "py.warnings":
            return str(record.args[0] if record.args else record.msg).startswith(self._own_dirs)
        return record.name.split(".")[0] in OWN_LOGGERS


class _TerminalFormatter(logging.Formatter):
    """``warning: message`` — the shape of the command's own lines, not a logger's."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


class LibraryOutput:
    """For one command: descriptor 2 to a pipe copied to ``hpo.log``; logging and Python warnings to the same
    file, the project's own warnings also to the terminal; with ``verbose`` everything to the terminal too.

    ``attach(run_dir)`` starts the file (with what arrived before) once the study's run directory is open."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._file: IO[bytes] | None = None
        self._terminal_fd = -1
        self._terminal: IO[str] | None = None
        self._saved_stderr: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self._handlers: list[logging.Handler] = []
        self._root_before: tuple[int, list[logging.Handler]] = (logging.WARNING, [])
        self._own_terminal = False
        self.path: Path | None = None

    def __enter__(self) -> "LibraryOutput":
        sys.stderr.flush()
        self._terminal_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._saved_stderr = sys.stderr
        if _on_fd2(sys.stderr):  # it now writes into the pipe: the terminal is the saved descriptor
            self._terminal = open(self._terminal_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                                  closefd=False)
            self._own_terminal = True
        else:  # a stream of its own (a notebook's, a test's capture): our lines stay there
            self._terminal = sys.stderr
        sys.stderr = self._terminal
        self._thread = threading.Thread(target=self._copy, args=(read_fd,), name="hpo-library-output", daemon=True)
        self._thread.start()
        self._configure_logging()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        logging.captureWarnings(False)
        root = logging.getLogger()
        for h in self._handlers:
            h.flush()
            root.removeHandler(h)
        for h in self._root_before[1]:
            root.addHandler(h)
        root.setLevel(self._root_before[0])
        sys.stderr = self._saved_stderr  # type: ignore[assignment]
        os.dup2(self._terminal_fd, 2)  # closes this process's end of the pipe: the copier sees its end
        if self._thread is not None:
            self._thread.join(timeout=2.0)  # a child still holding the pipe must not hold the command up
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._own_terminal and self._terminal is not None:
            self._terminal.close()
        os.close(self._terminal_fd)

    def attach(self, run_dir: Path) -> None:
        """Write to ``run_dir/hpo.log`` from now on, starting with what arrived before."""
        with self._lock:
            if self._file is not None:
                return
            self.path = Path(run_dir) / LOG_NAME
            self._file = open(self.path, "ab", buffering=0)
            self._file.write(b"".join(self._held))
            self._held.clear()

    def write(self, data: bytes) -> None:
        """Keep ``data`` for ``hpo.log`` (in memory until it is attached)."""
        with self._lock:
            if self._file is not None:
                self._file.write(data)
            else:
                self._held.append(data)

    def _copy(self, read_fd: int) -> None:
        with open(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                self.write(chunk)
                if self.verbose:
                    os.write(self._terminal_fd, chunk)

    def _configure_logging(self) -> None:
        root = logging.getLogger()
        self._root_before = (root.level, list(root.handlers))
        for h in list(root.handlers):  # an earlier basicConfig writes to the old stderr, i.e. into the pipe
            root.removeHandler(h)
        root.setLevel(logging.INFO)
        to_file = logging.StreamHandler(_BytesSink(self))
        to_file.setFormatter(logging.Formatter(_FORMAT))
        to_terminal = logging.StreamHandler(self._terminal)
        if self.verbose:
            to_terminal.setFormatter(logging.Formatter(_FORMAT))
        else:
            to_terminal.addFilter(_OwnRecords())
            to_terminal.setFormatter(_TerminalFormatter())
        self._handlers = [to_file, to_terminal]
        for h in self._handlers:
            root.addHandler(h)
        for name in ("absl", "tensorflow", "alembic", "mlflow", "sqlalchemy", "optuna", "keras", "urllib3"):
            logging.getLogger(name).setLevel(logging.NOTSET)  # the root's level and handlers decide
        logging.captureWarnings(True)


def _on_fd2(stream: object) -> bool:
    """Whether ``stream`` writes to file descriptor 2."""
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


class _BytesSink:
    """A text stream for a logging handler that writes into a :class:`LibraryOutput`'s log."""

    def __init__(self, out: LibraryOutput) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text.encode("utf-8", "backslashreplace"))

    def flush(self) -> None:
        pass
