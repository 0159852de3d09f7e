"""Fixtures: a real redis-server on a free loopback port (the test fails if redis-server is missing)."""

from __future__ import annotations

import contextlib
import typing as t

import pytest

with contextlib.suppress(ImportError):
    # The hypothesis plugin imports hypothesis at session end when no test did; under pytest's
    # assertion rewriting, at that stack depth, CPython 3.11.7 fails with "AST constructor recursion
    # depth mismatch" (a CPython bug). Importing it here, shallow, avoids that when these tests run alone.
    import hypothesis  # noqa: F401
from streamtap_redis.testing import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> t.Iterator[RedisServer]:
    """One redis-server for the session; tests use their own key prefix."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_redis() -> t.Iterator[RedisServer]:
    """A redis-server of the test's own (to restart or kill)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to the test."""
    import secrets

    return "t" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def tls_redis() -> t.Iterator[RedisServer]:
    """redis-server serving TLS only (``--tls-port``), certificates from a throw-away CA made by trustme."""
    with RedisServer(tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def password_redis() -> t.Iterator[RedisServer]:
    """redis-server with ``--requirepass``."""
    with RedisServer(password="s3cret-pw") as server:
        yield server


@pytest.fixture(scope="module")
def tls_password_redis() -> t.Iterator[RedisServer]:
    """redis-server with TLS and ``--requirepass`` both."""
    with RedisServer(tls=True, password="s3cret-pw") as server:
        yield server
