"""One redaction for every record and log line: a URL given whole, and URLs inside free text."""

from __future__ import annotations

from hpo.redaction import redact


def test_a_url_loses_its_password_even_one_with_at_signs_and_colons() -> None:
    assert redact("postgresql://user:pa55@host:5432/db") == "postgresql://user:***@host:5432/db"
    assert redact("postgresql+psycopg2://u:p@ss:w@db-host/hpo") == "postgresql+psycopg2://u:***@db-host/hpo"
    assert redact("http://hpo:s3cr3t@127.0.0.1:5000") == "http://hpo:***@127.0.0.1:5000"


def test_values_without_a_password_are_unchanged() -> None:
    for value in ("sqlite:////tmp/mlflow.db", "http://user@host/x", "embedded sqlite", "user:pw@host", "", 3, None,
                  ["http://u:p@h"]):
        assert redact(value) == value


def test_every_url_in_free_text_loses_its_password_and_the_text_stays() -> None:
    text = "cannot reach http://hpo:pw1@a:5000/api (retry postgresql://root:pw2@b/db); mail x@y.org"
    assert redact(text) == "cannot reach http://hpo:***@a:5000/api (retry postgresql://root:***@b/db); mail x@y.org"


def test_redacting_twice_changes_nothing() -> None:
    for value in ("postgresql://u:p@ss@h/db", "see http://u:p@h and https://v:q@k"):
        assert redact(redact(value)) == redact(value)


def test_query_and_connection_string_passwords_are_hidden_in_every_form() -> None:
    assert (redact("postgresql://u@host/db?password=hunter2&sslmode=require")
            == "postgresql://u@host/db?password=***&sslmode=require")
    assert (redact("postgresql://u:pw1@host/db?sslpassword=hunter2&PASSWORD=x")
            == "postgresql://u:***@host/db?sslpassword=***&PASSWORD=***")
    assert redact("mysql+pymysql://u:p%40ss@h/db") == "mysql+pymysql://u:***@h/db"
    assert redact("connect failed: host=h password=hunter2 dbname=x") == "connect failed: host=h password=*** dbname=x"
    text = "error at postgresql://u@h/db?password=hunter2 (retry)"
    assert "hunter2" not in redact(text) and redact(text).endswith("(retry)")
    for value in ("postgresql://u@host/db?password=hunter2", "a password=hunter2 b"):
        assert redact(redact(value)) == redact(value)
