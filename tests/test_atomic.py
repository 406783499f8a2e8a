"""assistant.atomic: a failed write leaves the target as it was and nothing beside it, and
every temporary name it makes is one the doctor reads back."""

from __future__ import annotations

import os

import pytest

from assistant import atomic


def test_a_file_is_replaced_whole(tmp_path):
    target = tmp_path / "a.json"
    atomic.write_json(target, {"n": 1})
    atomic.write_json(target, {"n": 2})
    assert target.read_text() == '{"n": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def half(path):
        path.write_text("ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_file(target, half)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "export"
    for n in (1, 2):
        with atomic.new_folder(target) as tmp:
            assert tmp.parent == tmp_path and not target.joinpath(f"f{n}").exists()
            (tmp / f"f{n}").write_text(str(n))
    assert sorted(p.name for p in target.iterdir()) == ["f2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("kept")
    with pytest.raises(RuntimeError), atomic.new_folder(target) as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("killed halfway")
    assert sorted(p.name for p in target.iterdir()) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_the_earlier_folder_is_put_back_when_the_new_one_cannot_move_in(tmp_path, monkeypatch):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("kept")
    new = tmp_path / "new"
    new.mkdir()
    real = os.replace

    def refuse_the_new_one(a, b):
        if a == new:
            raise OSError(13, "Permission denied")
        return real(a, b)

    monkeypatch.setattr(atomic.os, "replace", refuse_the_new_one)
    with pytest.raises(OSError):
        atomic.replace_dir(new, target)
    assert (target / "old").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "new"]


@pytest.mark.parametrize("role", ["tmp", "old", "restore"])
def test_the_doctor_reads_back_every_temporary_name(tmp_path, role):
    target = tmp_path / "app.db"
    name = atomic.temp_name(target, role)
    assert name.parent == tmp_path and name.name.startswith(".app.db.")
    assert atomic.parse_temp_name(name) == atomic.TempName(target, role, os.getpid())


def test_older_names_and_unrelated_ones(tmp_path):
    parse = atomic.parse_temp_name
    assert parse(tmp_path / ".ckpt-old-42-7") == atomic.TempName(tmp_path / "ckpt", "old", 42)
    assert parse(tmp_path / ".progress.json.42.tmp") == atomic.TempName(
        tmp_path / "progress.json", "tmp", 42)
    random = tmp_path / ".chunks.faiss-ab12cd34"
    assert parse(random) is None  # only where tempfile writers ran
    assert parse(random, random_suffix=True) == atomic.TempName(tmp_path / "chunks.faiss", "tmp", None)
    for name in ("chunks.faiss", ".hidden", ".x.tmp-abc-1", "export.tmp-1-2"):
        assert parse(tmp_path / name) is None, name
