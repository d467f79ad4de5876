"""Writing files so that no reader ever sees half of one: the one atomic-write helper.

A temporary file in the same folder (a rename across file systems is not atomic), flushed and fsynced
(so a crash after the rename cannot leave an empty file), then os.replace onto the target. On any
failure the temporary file is removed and an earlier file of that name is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pet import PetError


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; whatever was written there replaces `path` when the block
    ends without an error. For writers that want a file name (np.save, a model writer)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp" + suffix, dir=p.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:  # a full disk, a file-size limit, a read-only folder: say so, leave nothing behind
        raise PetError(f"could not write {p}: {e.strerror or e}; nothing was written (an earlier file of that "
                       "name is unchanged): free some space or choose another folder") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write text (UTF-8, newlines as given) to `path` atomically; returns the path."""
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return p
