"""Fixtures of the web tests: real uvicorn servers on loopback, an HTTP client."""

from __future__ import annotations

import typing as t

import httpx
import pytest

from streamtap.web import create_app
from streamtap.web.server import BackgroundServer

# -- servers -----------------------------------------------------------------------


@pytest.fixture
def serve() -> t.Iterator[t.Callable[..., BackgroundServer]]:
    """Start real uvicorn servers for apps made with create_app(module, **options); stopped after the test."""
    servers: list[BackgroundServer] = []

    def start(module: t.Any, **options: t.Any) -> BackgroundServer:
        srv = BackgroundServer(create_app(module, **options)).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
async def client() -> t.AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as c:
        yield c
