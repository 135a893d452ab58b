"""Which database errors a model turn waits out (a lost or refused connection) and which it
does not (a value the database refuses), and that the text it reports carries no parameters."""

from __future__ import annotations

import psycopg
import sqlalchemy.exc

from activities.model import _db_error_text, is_transient_db_error


def wrapped(cls: type[sqlalchemy.exc.DBAPIError], orig: Exception) -> Exception:
    return cls("INSERT INTO messages (content) VALUES (%(c)s)", {"c": "secret text"}, orig)


def test_lost_connections_are_transient() -> None:
    refused = psycopg.OperationalError("connection failed: Connection refused")
    assert is_transient_db_error(refused)
    assert is_transient_db_error(wrapped(sqlalchemy.exc.OperationalError, refused))
    assert is_transient_db_error(sqlalchemy.exc.TimeoutError("QueuePool limit reached"))
    assert is_transient_db_error(ConnectionResetError())


def test_data_and_programming_errors_are_not() -> None:
    nul = psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    assert not is_transient_db_error(nul)
    assert not is_transient_db_error(wrapped(sqlalchemy.exc.DataError, nul))
    assert not is_transient_db_error(
        wrapped(sqlalchemy.exc.IntegrityError, psycopg.IntegrityError("duplicate key"))
    )
    assert not is_transient_db_error(ValueError("bad"))


def test_the_reported_text_has_no_statement_or_parameters() -> None:
    exc = wrapped(
        sqlalchemy.exc.OperationalError, psycopg.OperationalError("server closed the connection")
    )
    text = _db_error_text(exc)
    assert text == "OperationalError: server closed the connection"
    assert "secret" not in text and "INSERT" not in text
