"""Who may use the web app: Host names, cross-site requests, JSON bodies, the access token.

One ASGI middleware, :class:`RequestGuard`, runs before every endpoint; a
refused request never reaches one (no run starts, nothing is read):

1. **Host** (DNS rebinding): the ``Host`` header must be a loopback name
   (``localhost``, ``127.0.0.1``, ``[::1]``) or one of ``allowed_hosts``.
   Starlette's :class:`~starlette.middleware.trustedhost.TrustedHostMiddleware`
   decides; a refusal is ``400`` with a message saying what to configure.
2. **Client and token**: with an access token every request needs
   ``Authorization: Bearer <token>`` (``401``) -- the API, the AG-UI endpoint
   wherever ``agui_path`` puts it, and any unknown path -- except the built-in
   page (``/``, ``/static/...``) and ``/openapi.json``, which hold no data.
   Paths are taken relative to where the app is served (``root_path``: a
   Starlette ``Mount`` or ``uvicorn --root-path``), as Starlette routes them.
   Without a token only loopback clients are served (``403``).
3. **Origin** (cross-site requests): a state-changing request (any method but
   ``GET``, ``HEAD``, ``OPTIONS``) whose ``Origin`` -- or, without one, whose
   ``Referer`` -- is neither the app's own origin (the one of the ``Host`` it
   was sent to) nor one of ``allowed_origins`` is refused with ``403``. A
   request with neither header is not from a browser page and is served.
4. **JSON only**: a state-changing request that carries a body or a
   ``Content-Type`` must say ``application/json`` (``415`` otherwise), so a
   page can never send one as a CORS "simple request" without a preflight.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import typing as t
from urllib.parse import urlsplit

from ..exceptions import UsageError

__all__ = ["LOOPBACK_HOSTS", "RequestGuard", "SecurityPolicy", "allow_serving", "is_loopback"]

LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "[::1]")
"""The ``Host`` names always served: a loopback name cannot be rebound to another site."""

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_\-.]+|\*|\[[0-9a-f:.]+\]")
_PUBLIC_PATHS = frozenset({"", "/", "/openapi.json"})
"""Route paths served without the token: the page (``""`` is a mount point without its slash) and the API description."""
_PUBLIC_PREFIXES = ("/static/",)
"""Route path prefixes served without the token: the page's files."""


def _route_path(scope: t.Any) -> str:
    """The request's path relative to where the app is mounted (``root_path`` stripped), as Starlette routes it.

    The rule of Starlette's own (private) ``get_route_path``, written here: this module imports no web framework.
    """
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


def _needs_token(scope: t.Any) -> bool:
    """Whether a request must carry the access token (when there is one): all but the page and ``/openapi.json``."""
    path = _route_path(scope)
    return not (path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES))


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback interface."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _shown(value: str, limit: int = 200) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _names(option: str, values: t.Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, t.Iterable):
        msg = f"{option} must be a list of strings, got {values!r}; write {option}=[{values!r}]."
        raise UsageError(msg)
    out = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            msg = f"{option} entries must be non-empty strings, got {value!r}."
            raise UsageError(msg)
        out.append(value.strip().lower())
    return out


def _check_host(entry: str) -> str:
    with_brackets = entry
    try:
        if ipaddress.ip_address(entry).version == 6:
            with_brackets = f"[{entry}]"
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(with_brackets) is None:
        msg = (
            f"allowed_hosts entry {entry!r} is not a host name: give the name alone (no scheme, port or path), "
            "like 'chat.example.com', a wildcard like '*.example.com', or '*' to accept any Host."
        )
        raise UsageError(msg)
    return with_brackets


def _origin_of(url: str) -> tuple[str, str] | None:
    """``(scheme, netloc)`` of an absolute http(s) URL, the default port dropped; ``None`` if it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is not None and str(port) != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return scheme, host


def _check_origin(entry: str) -> str:
    origin = _origin_of(entry)
    if origin is None:
        msg = f"allowed_origins entry {entry!r} is not an origin: write the scheme, host and port, like 'https://app.example.com'."
        raise UsageError(msg)
    if urlsplit(entry).path not in ("", "/") or urlsplit(entry).query:
        msg = f"allowed_origins entry {entry!r} has a path; an origin is only scheme://host[:port], like 'https://app.example.com'."
        raise UsageError(msg)
    return f"{origin[0]}://{origin[1]}"


class SecurityPolicy:
    """The hosts and origins a :class:`RequestGuard` accepts, and the access token.

    Made by :func:`~streamtap.web.create_app` (``app.state.security``);
    :func:`~streamtap.web.serve` adds its own options with :meth:`allow`
    before it starts serving.

    Args:
        token: the bearer token every request but the page's and ``/openapi.json`` needs (``None``: loopback clients only).
        allowed_hosts: ``Host`` names served besides :data:`LOOPBACK_HOSTS`
            (``*.example.com`` wildcards; ``*`` turns the check off).
        allowed_origins: origins (``https://app.example.com``) whose pages
            may send state-changing requests, besides the app's own.

    Raises:
        UsageError: an entry that is not a host name or an origin (the message names it).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        allowed_hosts: t.Iterable[str] | None = None,
        allowed_origins: t.Iterable[str] | None = None,
    ) -> None:
        self.token = token.encode() if token else None
        self.hosts: tuple[str, ...] = LOOPBACK_HOSTS
        self.origins: frozenset[str] = frozenset()
        self._trusted: t.Any = None
        self.allow(hosts=allowed_hosts, origins=allowed_origins)

    def allow(self, *, hosts: t.Iterable[str] | None = None, origins: t.Iterable[str] | None = None) -> None:
        """Accept these ``Host`` names and origins too.

        Raises:
            UsageError: an entry that is not a host name or an origin.
        """
        new_hosts = [_check_host(h) for h in _names("allowed_hosts", hosts)]
        new_origins = {_check_origin(o) for o in _names("allowed_origins", origins)}
        self.hosts = tuple(dict.fromkeys(self.hosts + tuple(new_hosts)))
        self.origins = self.origins | new_origins
        self._trusted = None  # rebuilt with the new names on the next request

    def trusted_hosts(self, app: t.Any) -> t.Any:
        """The :class:`TrustedHostMiddleware` deciding on ``Host`` headers, in front of ``app``."""
        if self._trusted is None or self._trusted.app is not app:
            from starlette.middleware.trustedhost import TrustedHostMiddleware

            self._trusted = TrustedHostMiddleware(app, allowed_hosts=list(self.hosts), www_redirect=False)
        return self._trusted

    def same_site(self, source: str, host: str) -> bool:
        """Whether a page at ``source`` (an ``Origin`` or ``Referer``) may change state on the app reached as ``host``."""
        origin = _origin_of(source)
        if origin is None:
            return False  # "null" (sandboxed frames, file: pages) or garbage: not the app's page
        if f"{origin[0]}://{origin[1]}" in self.origins:
            return True
        host = host.lower()
        default = ":" + _DEFAULT_PORTS[origin[0]]
        host = host.removesuffix(default)
        return origin[1] == host


def allow_serving(
    app: t.Any,
    bind: str,
    *,
    allowed_hosts: t.Iterable[str] | None = None,
    allowed_origins: t.Iterable[str] | None = None,
) -> None:
    """Extend the policy of an app from :func:`~streamtap.web.create_app` for serving on ``bind``.

    The bound address itself (``192.168.1.5``, not a wildcard like ``0.0.0.0``)
    is accepted as a ``Host``, with ``allowed_hosts`` and ``allowed_origins``.

    Raises:
        UsageError: hosts or origins given for an app that has no policy (not made by ``create_app``).
    """
    policy = getattr(getattr(app, "state", None), "security", None)
    if not isinstance(policy, SecurityPolicy):
        if allowed_hosts or allowed_origins:
            msg = (
                "allowed_hosts/allowed_origins apply to apps made by streamtap.web.create_app(); "
                f"{app!r} is not one. Give them to create_app() instead."
            )
            raise UsageError(msg)
        return
    own = [bind] if bind and not is_loopback(bind) and bind not in ("0.0.0.0", "::", "") else []  # noqa: S104 - the address is compared with, not bound to
    policy.allow(hosts=[*own, *(allowed_hosts or ())], origins=allowed_origins)


class _HostCheck:
    """The ``send`` given to TrustedHostMiddleware: passed on when the host is accepted, else a JSON refusal."""

    __slots__ = ("host", "send")

    def __init__(self, send: t.Any, host: str) -> None:
        self.send = send
        self.host = host

    async def __call__(self, message: t.Mapping[str, t.Any]) -> None:
        # Only TrustedHostMiddleware's own refusal comes here: an accepted request uses self.send.
        if message["type"] == "http.response.start":
            msg = (
                f"This server does not answer to the Host {_shown(self.host)} (a DNS-rebinding page would send "
                f"its own name). Open it by a loopback name ({', '.join(LOOPBACK_HOSTS)}), or add the name to "
                "allowed_hosts (create_app, serve, streamtap demo --allowed-host)."
            )
            await _refuse(self.send, 400, msg)


async def _refuse(send: t.Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware applying a :class:`SecurityPolicy` to every HTTP request (see the module docs)."""

    def __init__(self, app: t.Any, policy: SecurityPolicy) -> None:
        self.app = app
        self.policy = policy
        self._after_host = self._host_ok  # one bound method: the policy keeps its TrustedHostMiddleware around it

    async def __call__(self, scope: t.Any, receive: t.Any, send: t.Any) -> None:
        """Check the request (ASGI), then pass it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = ""
        for name, value in scope.get("headers") or ():
            if name == b"host":
                host = value.decode("latin-1")
                break
        await self.policy.trusted_hosts(self._after_host)(scope, receive, _HostCheck(send, host))

    async def _host_ok(self, scope: t.Any, receive: t.Any, check: _HostCheck) -> None:
        send = check.send
        problem = self._problem(scope, check.host)
        if problem is None:
            await self.app(scope, receive, send)
        else:
            await _refuse(send, *problem)

    def _problem(self, scope: t.Any, host: str) -> tuple[int, str] | None:
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        policy = self.policy
        if policy.token is None:
            client = scope.get("client")
            if client is not None and not is_loopback(client[0]):
                return (
                    403,
                    "This server has no access token, so it only serves loopback clients. Start it with a token to allow others.",
                )
        elif _needs_token(scope):
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), policy.token):
                return 401, (
                    "Missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token the server "
                    "was started with (the built-in page sends it when opened as /#token=<token>)."
                )
        if scope["method"] in _SAFE_METHODS:
            return None
        source_header = b"origin" if b"origin" in headers else b"referer"
        source = headers.get(source_header)
        if source is not None:
            text = source.decode("latin-1")
            if not policy.same_site(text, host):
                return 403, (
                    f"Cross-site request refused: its {source_header.decode().title()} {_shown(text)} is not this app's "
                    "origin. If pages of that site should use this API, add its origin to allowed_origins "
                    "(create_app, serve, streamtap demo --allowed-origin)."
                )
        content_type = headers.get(b"content-type")
        has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or b"transfer-encoding" in headers
        if content_type is not None or has_body:
            media = (content_type or b"").split(b";", 1)[0].strip().lower()
            if media != b"application/json":
                shown = _shown(content_type.decode("latin-1")) if content_type is not None else "none"
                return 415, f"This endpoint takes a JSON body: send 'Content-Type: application/json' (got {shown})."
        return None
