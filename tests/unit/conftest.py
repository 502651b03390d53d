"""The unit tier's rule, enforced: no database and no subprocess (``make test-fast`` runs in seconds,
without PostgreSQL). A test that needs either belongs in tests/, beside the other end-to-end tests."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

MOVE = "tests/unit runs {}: this test belongs in tests/ (end to end)"


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """Overrides tests/conftest.py's: every database fixture (pg_dsn, pg, settings …) comes through here."""
    pytest.fail(MOVE.format("no PostgreSQL"))


@pytest.fixture(autouse=True)
def no_subprocess_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(what: str):
        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError(MOVE.format(what))

        return refused

    monkeypatch.setattr(subprocess, "Popen", refuse("no subprocess"))
    monkeypatch.setattr(psycopg, "connect", refuse("no PostgreSQL"))
    monkeypatch.setattr(psycopg.Connection, "connect", refuse("no PostgreSQL"))
