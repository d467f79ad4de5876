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


def test_atomic_folder_replaces_a_folder_whole_and_leaves_no_temp_folder(tmp_path):
    from pet.files import atomic_folder

    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not list(tmp.iterdir())
        assert (target / "old.txt").read_text() == "old"  # untouched while the new one is written
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.json").write_text("{}")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["sub", "sub/a.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
    mode = tmp_path / "plain"
    mode.mkdir()
    assert target.stat().st_mode == mode.stat().st_mode  # the usual permissions, not a temp folder's


def test_a_failed_folder_write_keeps_the_old_folder_and_the_error(tmp_path):
    from pet.files import atomic_folder

    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "step").write_text("3")
    with pytest.raises(OSError, match="No space"):
        with atomic_folder(target) as tmp:
            (tmp / "step").write_text("4")
            raise OSError(28, "No space left on device")
    assert (target / "step").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]
    with atomic_folder(tmp_path / "new" / "export") as tmp:  # nothing there yet, parents included
        (tmp / "Modelfile").write_text("FROM .")
    assert (tmp_path / "new" / "export" / "Modelfile").read_text() == "FROM ."


def test_written_files_get_the_permissions_of_a_plain_write(tmp_path):
    from pet.files import atomic_folder

    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    write_atomic(tmp_path / "status.json", "{}")
    with atomic_folder(tmp_path / "adapter") as tmp:
        write_atomic(tmp / "pet_adapter.json", "{}")
    mode = plain.stat().st_mode
    assert (tmp_path / "status.json").stat().st_mode == mode  # not a temp file's owner-only mode
    assert (tmp_path / "adapter" / "pet_adapter.json").stat().st_mode == mode
