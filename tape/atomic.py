"""Writing a file atomically: a temporary file beside the target, fsynced, then renamed
over it, so a reader sees the old file or the new one, never half of one.

A temporary is named after its target, host and process, so that a later save can tell
the leftovers of a killed writer (same host, process gone) from a live one's and remove
them. Used by ``tape.save``.
"""

from __future__ import annotations

import os
import re
import secrets
import socket

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _temp_pattern(base: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(base)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)"
                      r"\.[0-9a-f]{12}\.tmp")


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_stale_temps(folder: str, base: str) -> None:
    """Remove what killed saves of the same file on this host left behind."""
    pattern = _temp_pattern(base)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        found = pattern.fullmatch(name)
        if found and found["host"] == _HOST and not _process_alive(int(found["pid"])):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str, chunks) -> None:
    """Write to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    folder, base = os.path.split(path)
    _remove_stale_temps(folder, base)
    tmp = os.path.join(folder, f".{base}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)
