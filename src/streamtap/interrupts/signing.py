"""Tamper-evident pause records: an HMAC-SHA256 signature over the record's canonical JSON.

A pause record goes to a front end and comes back to resume the run, so the
server signs it when the flow pauses and checks the signature before a
resume runs anything. The signature is the record's ``"signature"`` member::

    "signature": {"alg": "HMAC-SHA256", "key_id": "3f9c0a61d2b4", "mac": "<64 hex digits>",
                  "members": {"shared": "<16 hex digits>", ...}}

``mac`` is HMAC-SHA256 (stdlib :mod:`hmac`) over the canonical JSON of every
other member (keys sorted, compact separators, ASCII escapes; a float with an
integral value written as an integer, the way a JavaScript front end writes
it back), so a record that went through ``JSON.parse``/``JSON.stringify``
still verifies. ``key_id`` names the key (a hash of it, not the key) so that
an error can tell "signed with another key" from "edited"; ``members`` (a
short MAC of each top-level member) lets it name what was edited. Only
``mac`` decides, compared with :func:`hmac.compare_digest`.

Where the key comes from, first match wins:

1. ``key=`` given to the pause store (``MemoryPauseStore(key=...)``,
   ``SQLitePauseStore(path, key=...)``);
2. the ``STREAMTAP_RECORD_KEY`` environment variable (set the same value in
   every process that makes or resumes records);
3. a :class:`~streamtap.interrupts.SQLitePauseStore` keeps a random key in its
   database (created on first use), so any process opening the file can resume;
4. otherwise (a :class:`~streamtap.interrupts.MemoryPauseStore`, or a flow
   without a store) a random key made once per process: records resume in the
   process that made them only.

A key is at least 16 bytes; make one with
``python -c "import secrets; print(secrets.token_hex(32))"``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
import typing as t

from ..exceptions import UsageError
from .errors import TamperedRecordError
from .schema import short

__all__ = [
    "KEY_ENV",
    "MIN_KEY_BYTES",
    "canonical_json",
    "check_key",
    "default_key",
    "sign_record",
    "signing_key",
    "verify_record",
]

KEY_ENV = "STREAMTAP_RECORD_KEY"
"""The environment variable holding the key that signs pause records."""

MIN_KEY_BYTES = 16
"""The shortest key accepted (in bytes, after UTF-8 encoding a string)."""

ALGORITHM = "HMAC-SHA256"
_DOMAIN = b"streamtap.pause\n"  # the MAC of a record cannot be replayed as a MAC of anything else
_HOW = 'make one with: python -c "import secrets; print(secrets.token_hex(32))"'


def check_key(key: str | bytes, where: str) -> bytes:
    """Return ``key`` as bytes, or raise UsageError naming ``where`` it came from and how to make a good one."""
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes):
        msg = f"The record signing key ({where}) must be str or bytes, got {type(key).__name__}; {_HOW}."
        raise UsageError(msg)
    if len(key) < MIN_KEY_BYTES:
        msg = (
            f"The record signing key ({where}) is {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes ({_HOW})."
        )
        raise UsageError(msg)
    return key


@functools.lru_cache(maxsize=1)
def _process_key() -> bytes:
    return secrets.token_bytes(32)  # made on first use, never changed: records resume in this process


def default_key() -> bytes:
    """The key when no store gives one: ``STREAMTAP_RECORD_KEY``, else a random key made once per process."""
    env = os.environ.get(KEY_ENV)
    if env:
        return check_key(env, f"the {KEY_ENV} environment variable")
    return _process_key()


def signing_key(store: t.Any) -> bytes:
    """The key that signs and verifies the records of a flow with this pause store (``None``: no store).

    A store provides its key with a ``signing_key()`` method (both built-in
    stores do); a store without one uses :func:`default_key`.
    """
    method = getattr(store, "signing_key", None)
    return method() if callable(method) else default_key()


def _canon(value: t.Any) -> t.Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON.stringify(2.0) == "2": the same record after a JavaScript round trip
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return value


def canonical_json(value: t.Any) -> bytes:
    """The canonical JSON of a value: sorted keys, compact separators, ASCII escapes, integral floats as integers."""
    return json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"streamtap.key-id\n" + key).hexdigest()[:12]


def _mac(key: bytes, label: bytes, value: t.Any) -> str:
    return hmac.new(key, _DOMAIN + label + b"\n" + canonical_json(value), hashlib.sha256).hexdigest()


def _body(record: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {k: v for k, v in record.items() if k != "signature"}


def _member_macs(record: t.Mapping[str, t.Any], key: bytes) -> dict[str, str]:
    return {k: _mac(key, b"member:" + canonical_json(k), v)[:16] for k, v in record.items() if k != "signature"}


def _same(a: t.Any, b: str) -> bool:
    """Constant-time equality of a MAC from the record (any value) and a computed one."""
    given = a.encode("utf-8", "backslashreplace") if isinstance(a, str) else b""
    return hmac.compare_digest(given, b.encode())


def sign_record(record: dict[str, t.Any], key: bytes) -> dict[str, t.Any]:
    """Set ``record["signature"]`` (replacing any) and return the record.

    ``mac`` covers the whole record; ``members`` (a short MAC per top-level
    member) only lets a refusal name what was edited.
    """
    record.pop("signature", None)
    record["signature"] = {
        "alg": ALGORITHM,
        "key_id": _key_id(key),
        "mac": _mac(key, b"record", _body(record)),
        "members": _member_macs(record, key),
    }
    return record


def verify_record(record: t.Mapping[str, t.Any], key: bytes) -> None:
    """Raise :class:`TamperedRecordError` unless ``record`` carries a valid signature made with ``key``.

    The error says what failed: no signature (``reason="unsigned"``), another
    key (``"wrong_key"``), or which members were edited (``"changed"``).
    """
    raw_id = record.get("id")
    pid = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else short(raw_id)  # client-made: keep messages short
    sig = record.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != ALGORITHM or not isinstance(sig.get("mac"), str):
        raise TamperedRecordError(
            raw_id,
            "unsigned",
            f"Pause record {pid} has no valid signature ({ALGORITHM}), so it cannot be trusted and nothing ran. Resume "
            "with the record exactly as the interrupted run returned it (End.output, Interrupt.record), or by its id "
            "from the flow's store; a record made before streamtap signed records has to be made again.",
        )
    try:
        if _same(sig["mac"], _mac(key, b"record", _body(record))):
            return
        now = _member_macs(record, key)
    except (TypeError, ValueError, RecursionError):
        raise TamperedRecordError(
            raw_id,
            "changed",
            f"Pause record {pid} is not plain JSON any more (or is nested too deeply), so it cannot match its "
            "signature; nothing ran. Send the record back unchanged.",
        ) from None
    if sig.get("key_id") != _key_id(key):
        raise TamperedRecordError(
            raw_id,
            "wrong_key",
            f"Pause record {pid} was signed with another key (key id {short(sig.get('key_id'))}; this flow's key is "
            f"{_key_id(key)!r}), so nothing ran: it was made by another process or store. Give every process that "
            f"makes or resumes records the same key ({KEY_ENV}, or key= on the pause store), or share one "
            "SQLitePauseStore file.",
        )
    members = sig.get("members")
    signed: dict[str, t.Any] = members if isinstance(members, dict) else {}
    changed = sorted(str(k) for k in {*signed, *now} if not _same(signed.get(k), now.get(k, "")))
    names = ", ".join(short(m) for m in changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
    what = f"its {names} changed" if changed else "it was changed"
    raise TamperedRecordError(
        raw_id,
        "changed",
        f"Pause record {pid} does not match its signature: {what} after the server signed it. Nothing ran and the "
        "pause is still pending. Send the record back unchanged (only the answer is the client's to give), or resume "
        "it by its id from the flow's store.",
    )
