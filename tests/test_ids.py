"""Run ids: unguessable, unique, and never shared with a forked child."""

from __future__ import annotations

import os
import re

import pytest

from streamtap.ids import new_id


def test_ids_are_16_hex_digits_and_unique() -> None:
    ids = [new_id() for _ in range(5000)]  # several refills of the pool
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    new_id()  # the pool now holds ids read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the ids it draws, then leave at once
        os.close(read)
        os.write(write, " ".join(new_id() for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(20)}
    assert len(child) == 20 and not child & parent
