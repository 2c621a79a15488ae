"""Durable writes: whole files or nothing, and leftovers of dead writers removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simsearch.fsio import atomic_folder, atomic_path, atomic_write_json, atomic_write_text, remove_stale_temps


def test_a_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    atomic_write_json(target, {"x": 1})
    assert target.read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_temporary_files_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".vectors.faiss.{dead_pid}.0123abcd.tmp"
    live = tmp_path / f".manifest.json.{os.getpid()}.89abcdef.tmp"
    unrelated = tmp_path / ".hidden.tmp"
    for p in (stale, live, unrelated):
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])


def test_a_folder_is_written_under_a_temporary_name_and_renamed_whole(tmp_path):
    target = tmp_path / "set"
    with atomic_folder(target) as tmp:
        (tmp / "data").write_text("x")
        assert tmp.parent == tmp_path and not target.exists()
    assert (target / "data").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_a_failed_folder_write_leaves_the_old_folder_and_no_temporary_one(tmp_path):
    target = tmp_path / "set"
    target.mkdir()
    (target / "old").write_text("kept")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["set"] and (target / "old").read_text() == "kept"


def test_temporary_folders_of_dead_processes_are_removed_only_for_the_name_asked(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    mine, other = tmp_path / f".set.{pid}.0123abcd.tmp", tmp_path / f".other.{pid}.0123abcd.tmp"
    for folder in (mine, other):
        folder.mkdir()
        (folder / "data.mdb").write_bytes(b"half")
    assert remove_stale_temps(tmp_path, "set") == [mine]
    assert [p.name for p in tmp_path.iterdir()] == [other.name]
