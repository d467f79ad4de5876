"""pet/files.py: the one atomic-write helper."""

import numpy as np
import pytest

from pet import PetError
from pet.files import atomic_path, write_atomic


def test_write_atomic_writes_text_exactly_and_leaves_no_temp_file(tmp_path):
    out = tmp_path / "sub" / "a.jsonl"
    assert write_atomic(out, "é\r\nline\n") == out
    assert out.read_bytes() == "é\r\nline\n".encode("utf-8")
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.jsonl"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp_file(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_os_error_becomes_one_clear_pet_error(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(PetError, match="could not write .*nothing was written"):
        with atomic_path(out):
            raise OSError(28, "No space left on device")
    assert out.read_text() == "old"


def test_atomic_path_keeps_the_suffix_a_writer_needs(tmp_path):
    out = tmp_path / "vecs.npy"
    with atomic_path(out, suffix=".npy") as tmp:
        np.save(tmp, np.arange(3), allow_pickle=False)  # np.save would add .npy to a name without it
    assert np.load(out).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["vecs.npy"]
