"""Connecting to Redis: one URL, checked up front, never shown with its password."""

from __future__ import annotations

import re
import typing as t

from streamtap.exceptions import UsageError

if t.TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

__all__ = ["RedisUnavailable", "check_url", "client_for", "connect", "mask_url"]

_USERINFO = re.compile(r"^(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@", re.IGNORECASE)
_SCHEMES = ("redis://", "rediss://", "unix://")


class RedisUnavailable(ConnectionError):
    """Redis could not be reached; the message names the URL (password masked) and what to check."""


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://:s3cret@host`` -> ``redis://:***@host``)."""
    match = _USERINFO.match(url)
    if match is None or match.group("password") is None:
        return url
    return f"{match.group('scheme')}{match.group('user')}:***@{url[match.end() :]}"


def check_url(url: str) -> str:
    """Return ``url`` when it is a Redis URL.

    Raises:
        UsageError: naming the (masked) value and the accepted forms.
    """
    if not isinstance(url, str) or not url.lower().startswith(_SCHEMES):
        shown = mask_url(url) if isinstance(url, str) else repr(url)
        msg = (
            f"{shown!r} is not a Redis URL. Use redis://[:password@]host[:port][/db], "
            "rediss://... for TLS, or unix:///path/to/redis.sock."
        )
        raise UsageError(msg)
    return url


async def connect(url: str, *, timeout: float = 5.0, check: bool = True) -> aioredis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` for TLS, ``unix://``), pinged when ``check``.

    TLS settings go in the URL's query, as redis-py reads them: ``ssl_ca_certs`` (the CA file to trust),
    ``ssl_certfile`` / ``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs=none`` (no check; not for production).

    Args:
        url: the Redis URL; a password in it is used but never shown.
        timeout: seconds to connect (and for the first ping).
        check: ping now, so a wrong URL fails here with a clear error rather than mid-run.

    Raises:
        UsageError: ``url`` is not a Redis URL.
        RedisUnavailable: Redis did not answer; the message names the masked URL.
    """
    from redis.exceptions import RedisError

    client = client_for(url, timeout=timeout)
    if check:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            msg = f"Redis at {mask_url(url)} did not answer ({type(exc).__name__}: {_masked(str(exc), url)}). {_hint(exc)}"
            raise RedisUnavailable(msg) from None
    return client


def client_for(url: str, *, timeout: float = 5.0, max_connections: int = 256) -> aioredis.Redis:
    """A client for ``url`` that connects on first use (no ping).

    Its pool holds ``max_connections`` connections (commands going at once).
    Live readers do not hold connections: one ``XREAD BLOCK`` per store serves them all.

    Raises:
        UsageError: ``url`` is not a Redis URL.
    """
    import redis.asyncio as aioredis

    check_url(url)
    return aioredis.Redis.from_url(
        url, max_connections=max_connections, socket_connect_timeout=timeout, health_check_interval=10
    )


def _hint(exc: BaseException) -> str:
    """What to check, for the failure ``exc`` (a refused password, an untrusted certificate, or anything else)."""
    from redis.exceptions import AuthenticationError, AuthenticationWrongNumberOfArgsError

    text = str(exc)
    if isinstance(exc, (AuthenticationError, AuthenticationWrongNumberOfArgsError)) or any(
        word in text for word in ("NOAUTH", "WRONGPASS", "invalid username-password", "invalid password")
    ):
        return (
            "Redis refused the password (or the URL has none and the server requires one): "
            "put the right one in the URL, redis://:PASSWORD@host:port/db (rediss:// for TLS)."
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (
            "The server's TLS certificate is not trusted here: add its CA to the URL "
            "(rediss://host:port/db?ssl_ca_certs=/path/to/ca.pem) or to the system's trust store."
        )
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return "The server does not speak TLS on that port: use redis:// for a plain port, rediss:// for a TLS one."
    return "Check that redis-server runs there and that the URL (host, port, password, db) is right."


def _masked(text: str, url: str) -> str:
    match = _USERINFO.match(url)
    if match is not None and match.group("password"):
        text = text.replace(match.group("password"), "***")
    return text
