"""Atomic file replacement: readers see the old file or the new one, never half of either.

Servers reload files other processes rewrite (clients files, CRLs, key stores, trust-list
caches): a reader must never parse a torn write, and two writers must never share a
temporary file. Each write goes to a uniquely named temporary file in the same directory
(``os.replace`` is only atomic within one file system), is fsynced, then renamed over
the target; the directory is fsynced so the rename survives a crash.

A leaf module: it imports nothing from ``confiance``, so ``pki`` can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

# What ``Path.write_text`` gives under the usual umask: files others may read (CRLs,
# endpoints.json). Pass 0o600 for secrets (keys, client files holding secret hashes).
DEFAULT_MODE = 0o644


def write_atomic(path: Path | str, data: bytes | str, mode: int = DEFAULT_MODE) -> None:
    """Replace ``path`` with ``data`` (str is written as UTF-8) in one atomic step, with ``mode``."""
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the data itself is synced
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
