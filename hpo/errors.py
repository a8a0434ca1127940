"""Error signals of the framework.

Three distinct signals, as KerasTuner separates them: a bad configuration stops
everything before the first trial (:class:`ConfigError`), a failing trial is
recorded and the study goes on (:class:`TrialFailed`), a pruned trial ends early
on purpose (:class:`TrialPruned`).
"""

from __future__ import annotations


class HpoError(Exception):
    """Root of every error raised on purpose by this package."""


class ConfigError(HpoError, ValueError):
    """Invalid configuration, search space or data; raised before any trial runs.

    ``field`` names the offending field with a dotted path (``driver.sampler``).
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class TrialFailed(HpoError):
    """The trial cannot produce a result (exception, NaN loss, budget); the study goes on."""


class TrialPruned(HpoError):
    """The pruner stopped the trial early; the study goes on."""


class StudyInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped the study; finished trials are kept and a rerun resumes it."""
