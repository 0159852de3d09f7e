"""Run ids: random, unguessable, cheap.

An id is 16 hex digits (64 bits from :func:`os.urandom`), read in blocks so
that one costs about as much as a list pop. A forked child never reuses its
parent's ids.
"""

from __future__ import annotations

import os

__all__ = ["new_id", "pool"]

pool: list[str] = []
"""Ids read ahead; a hot path may ``pool.pop()`` one (on ``IndexError``, call :func:`new_id`)."""


def new_id() -> str:
    """A random, unguessable id of 16 hex digits (64 bits from ``os.urandom``).

    Randomness is read in blocks so that an id costs about as much as a list pop.
    """
    try:
        return pool.pop()
    except IndexError:
        # One hex string cut at every 16th digit in C: half the cost of slicing it in a loop.
        pool.extend(os.urandom(8 * 256).hex(",", 8).split(","))
        return pool.pop()


if hasattr(os, "register_at_fork"):  # a forked child must not reuse its parent's ids
    os.register_at_fork(after_in_child=pool.clear)
