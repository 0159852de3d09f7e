"""Pause stores: where pause records wait for their answers (in memory, or SQLite that survives restarts)."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
import typing as t

from ..exceptions import UsageError
from .errors import StalePauseError, UnknownInterruptError
from .records import check_record
from .signing import KEY_ENV, check_key, default_key

__all__ = ["MemoryPauseStore", "PauseStore", "SQLitePauseStore"]


class PauseStore(t.Protocol):
    """Where pause records wait for their answers.

    A record is ``pending`` until a resume ``claim``s it (only one resume
    can), then ``resumed`` once that run ends without error, or ``pending``
    again (``release``) when the resumed run failed or was cancelled.
    """

    def save(self, record: dict[str, t.Any]) -> None:
        """Keep a new record, pending."""

    def load(self, pause_id: str) -> dict[str, t.Any]:
        """The record with this id. Raises UnknownInterruptError when there is none."""

    def pending(self, run_id: str | None = None) -> list[dict[str, t.Any]]:
        """The pending records (of one run, if given), oldest first."""

    def claim(self, pause_id: str) -> None:
        """Mark a pending record as being resumed. Raises StalePauseError if it is not pending."""

    def release(self, pause_id: str) -> None:
        """Make a claimed record pending again (its resume failed)."""

    def done(self, pause_id: str) -> None:
        """Mark a claimed record as resumed for good."""

    # A store may also provide ``signing_key() -> bytes``: the key that signs and
    # verifies the records of flows using it (see streamtap.interrupts.signing).
    # Without it, flows use STREAMTAP_RECORD_KEY or a per-process key.


def _unknown(pause_id: str) -> UnknownInterruptError:
    return UnknownInterruptError(
        f"No pause record with id {pause_id!r} in this store; list pending ones with store.pending()."
    )


def _stale(pause_id: str, status: str) -> StalePauseError:
    return StalePauseError(
        f"Pause {pause_id} is {status}, not pending: it was already resumed (or is being resumed). "
        "Resume the newest record of the run instead (store.pending(run_id))."
    )


class _Transitions:
    """The claim/release/done transitions of a pause, shared by the stores.

    A subclass implements ``_move(pause_id, frm, to)``: atomically move a record
    from status ``frm`` to ``to``, raising ``_unknown``/``_stale`` otherwise.
    """

    def _move(self, pause_id: str, frm: str, to: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def claim(self, pause_id: str) -> None:
        """See :class:`PauseStore`."""
        self._move(pause_id, "pending", "claimed")

    def release(self, pause_id: str) -> None:
        """See :class:`PauseStore`."""
        self._move(pause_id, "claimed", "pending")

    def done(self, pause_id: str) -> None:
        """See :class:`PauseStore`."""
        self._move(pause_id, "claimed", "resumed")


class MemoryPauseStore(_Transitions):
    """A :class:`PauseStore` in this process's memory (thread-safe); gone when the process ends.

    Args:
        key: the key that signs its flows' pause records (at least 16 bytes).
            Default: ``STREAMTAP_RECORD_KEY``, else a random key made once per
            process (records then resume in this process only).
    """

    def __init__(self, *, key: str | bytes | None = None) -> None:
        self._key = None if key is None else check_key(key, "MemoryPauseStore(key=...)")
        self._lock = threading.Lock()
        self._records: dict[str, tuple[str, dict[str, t.Any]]] = {}

    def signing_key(self) -> bytes:
        """The key that signs and verifies records: ``key=``, else ``STREAMTAP_RECORD_KEY``, else per process."""
        return self._key if self._key is not None else default_key()

    def save(self, record: dict[str, t.Any]) -> None:
        """See :class:`PauseStore`."""
        check_record(record)
        with self._lock:
            self._records[record["id"]] = ("pending", json.loads(json.dumps(record)))

    def load(self, pause_id: str) -> dict[str, t.Any]:
        """See :class:`PauseStore`."""
        with self._lock:
            if pause_id not in self._records:
                raise _unknown(pause_id)
            return t.cast("dict[str, t.Any]", json.loads(json.dumps(self._records[pause_id][1])))

    def status(self, pause_id: str) -> str:
        """``pending``, ``claimed`` or ``resumed``."""
        with self._lock:
            if pause_id not in self._records:
                raise _unknown(pause_id)
            return self._records[pause_id][0]

    def pending(self, run_id: str | None = None) -> list[dict[str, t.Any]]:
        """See :class:`PauseStore`."""
        with self._lock:
            recs = [
                r for s, r in self._records.values() if s == "pending" and (run_id is None or r["run_id"] == run_id)
            ]
        return sorted(recs, key=lambda r: r["created_at"])

    def _move(self, pause_id: str, frm: str, to: str) -> None:
        with self._lock:
            if pause_id not in self._records:
                raise _unknown(pause_id)
            status, rec = self._records[pause_id]
            if status != frm:
                raise _stale(pause_id, status)
            self._records[pause_id] = (to, rec)


class SQLitePauseStore(_Transitions):
    """A :class:`PauseStore` in a SQLite file (stdlib ``sqlite3``): survives restarts, shared by processes.

    Args:
        path: the database file (created if missing), or ``":memory:"`` is refused
            (each connection would see its own database; use :class:`MemoryPauseStore`).
        key: the key that signs its flows' pause records (at least 16 bytes).
            Default: ``STREAMTAP_RECORD_KEY``, else a random key kept in the
            database (table ``streamtap_keys``, made on first use), so every
            process opening the file signs and verifies with the same key.
            Whoever can write the file can forge records: protect it like the
            records themselves.
    """

    def __init__(self, path: str | t.Any, *, key: str | bytes | None = None) -> None:
        self._key = None if key is None else check_key(key, "SQLitePauseStore(key=...)")
        self._file_key: bytes | None = None
        path = str(path)
        if path == ":memory:":
            msg = "SQLitePauseStore needs a file path; for an in-memory store use MemoryPauseStore()."
            raise UsageError(msg)
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS streamtap_pauses (id TEXT PRIMARY KEY, run_id TEXT, status TEXT NOT NULL, "
                "record TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
            )

    def signing_key(self) -> bytes:
        """The key that signs and verifies records: ``key=``, else ``STREAMTAP_RECORD_KEY``, else the file's own."""
        if self._key is not None:
            return self._key
        if os.environ.get(KEY_ENV):
            return default_key()
        if self._file_key is not None:
            return self._file_key
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS streamtap_keys (name TEXT PRIMARY KEY, key BLOB NOT NULL)")
            db.execute("INSERT OR IGNORE INTO streamtap_keys VALUES ('records', ?)", (secrets.token_bytes(32),))
            row = db.execute("SELECT key FROM streamtap_keys WHERE name = 'records'").fetchone()
        self._file_key = bytes(row[0])  # the first process to ask made it; every other one reads the same
        return self._file_key

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 30000")
        return _Closing(db)  # type: ignore[return-value]

    def save(self, record: dict[str, t.Any]) -> None:
        """See :class:`PauseStore`."""
        check_record(record)
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO streamtap_pauses VALUES (?, ?, 'pending', ?, ?, ?)",
                (record["id"], record.get("run_id"), json.dumps(record), record.get("created_at", now), now),
            )

    def load(self, pause_id: str) -> dict[str, t.Any]:
        """See :class:`PauseStore`."""
        with self._connect() as db:
            row = db.execute("SELECT record FROM streamtap_pauses WHERE id = ?", (pause_id,)).fetchone()
        if row is None:
            raise _unknown(pause_id)
        return t.cast(dict[str, t.Any], json.loads(row[0]))

    def status(self, pause_id: str) -> str:
        """``pending``, ``claimed`` or ``resumed``."""
        with self._connect() as db:
            row = db.execute("SELECT status FROM streamtap_pauses WHERE id = ?", (pause_id,)).fetchone()
        if row is None:
            raise _unknown(pause_id)
        return t.cast(str, row[0])

    def pending(self, run_id: str | None = None) -> list[dict[str, t.Any]]:
        """See :class:`PauseStore`."""
        q = "SELECT record FROM streamtap_pauses WHERE status = 'pending'"
        args: tuple[t.Any, ...] = ()
        if run_id is not None:
            q += " AND run_id = ?"
            args = (run_id,)
        with self._connect() as db:
            rows = db.execute(q + " ORDER BY created_at", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def _move(self, pause_id: str, frm: str, to: str) -> None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT status FROM streamtap_pauses WHERE id = ?", (pause_id,)).fetchone()
                if row is None:
                    raise _unknown(pause_id)
                if row[0] != frm:
                    raise _stale(pause_id, row[0])
                db.execute(
                    "UPDATE streamtap_pauses SET status = ?, updated_at = ? WHERE id = ?", (to, time.time(), pause_id)
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


class _Closing:
    """A sqlite3 connection that closes when its ``with`` block ends (sqlite3's own only commits)."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: tuple[t.Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()
