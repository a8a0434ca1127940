"""Passwords out of everything a study records or logs: URLs given whole, and URLs inside free text."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"  # what a password becomes
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.-]*://"
_ONE_URL = re.compile(rf"{_SCHEME}\S*")
# ``scheme://user:password@`` anywhere in a text (an error message, a log line): the password ends at the
# first ``@`` or space.
_CREDENTIALS = re.compile(rf"(\b{_SCHEME}[^:/@\s]+):[^@\s]+@")


def redact(value: Any) -> Any:
    """``value`` with the password of a URL hidden (``postgresql://user:***@host/db``); other values unchanged.

    A string that is one URL loses everything between ``user:`` and its last ``@`` (a password may hold
    ``@`` or ``:``); in any other string, the password of every URL in it becomes ``***``."""
    if not isinstance(value, str):
        return value
    if _ONE_URL.fullmatch(value):
        return _redact_url(value)
    return _CREDENTIALS.sub(r"\1:***@", value)


def _redact_url(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url
