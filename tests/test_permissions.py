"""The data is private to the account that runs the app: umask at start, `doctor` reports
and tightens what is loose, backups are private whatever they copied."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from click.testing import CliRunner

from assistant.operations.backup import backup
from assistant.cli import main
from assistant.operations.doctor import diagnose
from assistant.operations.permissions import PRIVATE_UMASK, loose_paths, private_umask
from assistant.storage import ConversationStore

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_cli_makes_everything_private_whatever_the_callers_umask(tmp_path):
    data = tmp_path / "fresh" / "data"
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    # A caller with the usual 022 umask: without ours, the folder would be 0755, files 0644.
    script = ("import os, sys; os.umask(0o022); from assistant.cli import main; "
              "sys.argv = ['assistant', 'db', 'upgrade']; main()")
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert mode(data) == 0o700
    assert mode(data / "assistant.db") == 0o600
    assert loose_paths(data) == []


def test_the_database_and_its_wal_and_shm_are_private(settings, db):
    ConversationStore(db).add_user_message(None, "a secret")  # the connection stays open
    files = sorted(settings.data_dir.glob("assistant.db*"))
    assert [f.name for f in files] == ["assistant.db", "assistant.db-shm", "assistant.db-wal"]
    assert {mode(f) for f in files} == {0o600}
    assert mode(settings.data_dir) == 0o700


def test_private_umask_is_one_call():
    old = private_umask()
    try:
        assert os.umask(PRIVATE_UMASK) == PRIVATE_UMASK
    finally:
        os.umask(old)


def test_doctor_reports_loose_files_and_repair_tightens_them(settings, env_settings, db):
    ConversationStore(db).add_user_message(None, "every conversation")
    data = settings.data_dir
    (data / "pre-restore-20261130").mkdir()
    (data / "pre-restore-20261130" / "assistant.db").write_bytes(b"old copy")
    (data / "exports").mkdir()
    (data / "exports" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(data / "exports" / "run.sh", 0o755)
    # What a data folder made before this release looks like: world-readable.
    for path in [data, *data.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() or path.name == "run.sh" else 0o644)

    report = diagnose(settings)
    finding = report.get("permissions")
    assert finding.status == "problem" and not report.ok
    assert "other local accounts may read" in finding.message
    assert any("assistant.db (-rw-r--r--)" in item for item in finding.items)
    assert any("pre-restore-20261130 (drwxr-xr-x)" in item for item in finding.items)

    result = CliRunner().invoke(main, ["doctor", "--repair"])
    assert result.exit_code == 0, result.output
    assert "repaired  permissions" in result.output
    assert mode(data) == 0o700 and mode(data / "assistant.db") == 0o600
    assert mode(data / "pre-restore-20261130" / "assistant.db") == 0o600
    assert mode(data / "exports") == 0o700
    assert mode(data / "exports" / "run.sh") == 0o700  # the owner keeps execute
    assert loose_paths(data) == []
    assert diagnose(settings).get("permissions").status == "ok"


def test_a_backup_is_private_even_when_the_data_was_not(settings, db, tmp_path):
    ConversationStore(db).add_user_message(None, "every conversation")
    for path in [settings.data_dir, *settings.data_dir.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    old = os.umask(0o022)  # a library caller that never set ours
    try:
        folder = backup(settings, tmp_path / "bk").path
        archive = backup(settings, tmp_path / "bk.tar.gz").path
    finally:
        os.umask(old)
    assert loose_paths(folder) == []
    assert mode(archive) == 0o600
    with tarfile.open(archive) as tar:
        assert all(m.mode & 0o077 == 0 for m in tar.getmembers())
