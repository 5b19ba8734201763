"""d2_nucleus.utils.file_io: output transactions and the temporary files of killed runs."""
import os
import subprocess

import pytest

from d2_nucleus.utils.file_io import (
    atomic_output_dir,
    atomic_write_text,
    output_transaction,
    remove_stale_temps,
)


def _dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_transaction_commits_all_files_at_the_end(tmp_path):
    a, b = tmp_path / "vis" / "a.png", tmp_path / "answer.json"
    with output_transaction():
        atomic_write_text(str(a), "A")
        atomic_write_text(str(b), "B")
        assert not a.exists() and not b.exists()  # staged under hidden temporary names
    assert a.read_text() == "A" and b.read_text() == "B"
    assert sorted(os.listdir(tmp_path)) == ["answer.json", "vis"]


def test_transaction_abort_leaves_nothing_and_keeps_old_files(tmp_path):
    old = tmp_path / "answer.json"
    old.write_text("old")
    with pytest.raises(ValueError):
        with output_transaction():
            atomic_write_text(str(tmp_path / "vis" / "deep" / "a.png"), "A")
            atomic_write_text(str(old), "new", overwrite=True)
            raise ValueError("bad image")
    assert old.read_text() == "old"
    assert os.listdir(tmp_path) == ["answer.json"]  # no temp files, no folders it created


def test_one_transaction_at_a_time():
    with output_transaction():
        with pytest.raises(RuntimeError):
            with output_transaction():
                pass
        with pytest.raises(RuntimeError):
            with atomic_output_dir("/nonexistent/x"):
                pass


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".answer.json.d2tmp-{dead}-ab12.tmp"
    stale_dir = tmp_path / f".out.d2tmp-{dead}-cd_34.tmp"
    live_other = tmp_path / f".answer.json.d2tmp-{os.getppid()}-ef56.tmp"  # a running process
    foreign = tmp_path / ".answer.json.xyz.tmp"  # not ours: never touched
    stale_file.write_text("partial")
    (stale_dir / "annotations").mkdir(parents=True)
    live_other.write_text("in use")
    foreign.write_text("user")
    removed = remove_stale_temps(str(tmp_path))
    assert sorted(removed) == sorted([str(stale_file), str(stale_dir)])
    assert live_other.exists() and foreign.exists()


def test_stale_old_folder_kept_when_its_target_is_gone(tmp_path):
    """A run killed between moving the previous output aside and moving the new one in: the
    previous output (the .old folder) is the user's data and stays until the target exists."""
    dead = _dead_pid()
    old = tmp_path / f".out.d2tmp-{dead}-ab.old"
    (old / "old").mkdir(parents=True)
    assert remove_stale_temps(str(tmp_path)) == []
    (tmp_path / "out").mkdir()
    assert remove_stale_temps(str(tmp_path)) == [str(old)]


def test_disk_full_names_the_output(tmp_path, monkeypatch):
    """ENOSPC carries no file name: atomic writes raise it again naming their target (issue 27),
    and leave nothing behind."""
    import errno

    from d2_nucleus.utils import file_io

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "answer.json"
    monkeypatch.setattr(file_io.os, "fsync", full)
    with pytest.raises(OSError) as e:
        file_io.atomic_write_text(str(target), "x" * 1000)
    assert e.value.errno == errno.ENOSPC and str(target) in str(e.value) and "No space left" in str(e.value)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    with pytest.raises(OSError, match="out.*No space left"):
        with file_io.atomic_output_dir(str(tmp_path / "out")):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert os.listdir(tmp_path) == []
