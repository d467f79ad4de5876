"""Writing files and folders so that no reader ever sees half of one: the one atomic-write helper.

A temporary file in the same folder (a rename across file systems is not atomic), flushed and fsynced
(so a crash after the rename cannot leave an empty file), then os.replace onto the target. On any
failure the temporary file is removed and an earlier file of that name is left as it was.
A folder (an adapter, a checkpoint, an export) is written the same way, whole: `atomic_folder`.
"""

from __future__ import annotations

import os
import secrets
import shutil
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
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        # A new file (O_EXCL) with the permissions a plain open() gives: mkstemp's are owner-only.
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
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


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block ends without an error, its files are
    fsynced and it replaces `path` whole (an earlier folder is renamed aside, the new one renamed in, the
    old one removed), so a reader finds the old folder or the new one, never a mix. On an error the
    temporary folder is removed, `path` is left as it was and the error goes on unchanged."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the folder gets the usual permissions (mkdtemp's are owner-only).
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        aside = tmp.with_name(tmp.name + ".old")
        if p.exists():
            os.replace(p, aside)
        os.replace(tmp, p)
        shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
