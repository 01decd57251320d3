"""One driver per output folder at a time.

Two drivers writing one output would both process the same pending shards, and a starting driver clears
the temporary files an interrupted run left behind, which are the live files of a driver still running.
A scheduled flow overlapping a manual rerun is the everyday way to get there. So the driver takes an
exclusive `flock` on `_job/driver.lock` for the whole run. The kernel drops it when the process exits,
however it exits (a SIGKILLed driver leaves no stale lock to clean up). A second driver fails at once and
says who holds the output.

Local (and NFS-mounted) outputs only: object stores offer no lock, so there the rule is documented, not
enforced.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.output.layout import LOCK_FILE
from pipeline.output.root import OutputRoot

log = logging.getLogger(__name__)


class OutputInUseError(RuntimeError):
    """Another driver is writing this output right now."""


def _holder(fd: int) -> str:
    """What the holding driver wrote about itself (best effort: it may be mid-write)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


@contextmanager
def exclusive_driver(root: OutputRoot) -> Iterator[None]:
    """Hold the output's driver lock for the duration of the block; raises OutputInUseError if taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: no lock, as on object stores
        fcntl = None
    if not root.is_local or fcntl is None:
        yield
        return
    path = root.path(LOCK_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputInUseError(
                f"{root.uri} is being written by another matpipe driver ({_holder(fd)}); wait for it to finish, "
                "or write to another output") from None
        # The file is never deleted (a reader could be opening it); it just says who holds it now.
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        yield
    finally:
        os.close(fd)  # releases the lock
