"""Passwords out of everything a study records or logs: URLs given whole, and URLs inside free text.

A password can sit in a URL's userinfo (``postgresql://user:secret@host/db``), in its query
(``postgresql://user@host/db?password=secret``, ``sslpassword=``), or in a ``key=value`` connection
string (``host=h password=secret``). :func:`redact` hides all three. A database URL is also parsed with
SQLAlchemy's :func:`~sqlalchemy.engine.make_url` (the parser the storage itself uses), and any password
or secret query value it finds that the text rules missed is hidden too. The text is edited in place,
never re-rendered, so everything that is not a secret reads as it was given."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

REDACTED = "***"  # what a password becomes
_SCHEME = r"[a-zA-Z][a-zA-Z0-9+.-]*://"
_ONE_URL = re.compile(rf"{_SCHEME}\S*")
# ``scheme://user:password@`` anywhere in a text (an error message, a log line): the password ends at the
# first ``@`` or space.
_CREDENTIALS = re.compile(rf"(\b{_SCHEME}[^:/@\s]+):[^@\s]+@")
# Secret parameters of a URL's query or of a libpq-style ``key=value`` string.
SECRET_KEYS = ("password", "sslpassword", "passwd", "pwd", "passphrase", "sslkey_password", "access_token",
               "api_key", "apikey", "secret", "token")
_SECRET_PARAM = re.compile(rf"(?i)(?<![\w-])((?:{'|'.join(SECRET_KEYS)})\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&;#,'\"]+)")


def redact(value: Any) -> Any:
    """``value`` with every password hidden (``postgresql://user:***@host/db?password=***``); other values unchanged.

    A string that is one URL loses everything between ``user:`` and its last ``@`` (a password may hold
    ``@`` or ``:``); in any other string, the password of every URL in it becomes ``***``; in both, the
    value of every secret parameter (``password=``, ``sslpassword=``, ...) becomes ``***``."""
    if not isinstance(value, str):
        return value
    if _ONE_URL.fullmatch(value):
        return _redact_url(value)
    return _SECRET_PARAM.sub(rf"\1{REDACTED}", _CREDENTIALS.sub(rf"\1:{REDACTED}@", value))


def _redact_url(url: str) -> str:
    out = url
    if "@" in url:
        scheme, rest = url.split("://", 1)
        creds, _, host = rest.rpartition("@")
        if ":" in creds:
            user = creds.split(":", 1)[0]
            out = f"{scheme}://{user}:{REDACTED}@{host}"
    out = _SECRET_PARAM.sub(rf"\1{REDACTED}", out)
    for secret in _parsed_secrets(url):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            if len(form) >= 3 and form != REDACTED:
                out = out.replace(form, REDACTED)
    return out


def _parsed_secrets(url: str) -> list[str]:
    """The password and secret query values SQLAlchemy's parser finds in ``url`` (none when it cannot parse it)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a database URL, or one SQLAlchemy cannot read (the text rules still apply)
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() in SECRET_KEYS:
            found += [value] if isinstance(value, str) else list(value)
    return [s for s in found if s and s != REDACTED]
