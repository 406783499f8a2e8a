"""``assistant doctor | backup | restore``: keep the stored data whole.

    assistant doctor [--repair] [--scan FOLDER]   # database, index and registry agree?
    assistant backup DEST                         # DEST: a new folder, or NAME.tar.gz
    assistant restore SRC [--force] [--verify-only]

Thin: parses, calls :mod:`assistant.operations.doctor` and :mod:`assistant.operations.backup`, prints. Domain
errors become one-line messages with exit status 1 (the ``assistant`` group does that).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from assistant.config import get_settings


@click.command("doctor")
@click.option("--repair", is_flag=True,
              help="Repair what can be repaired: rebuild the index from the database, remove "
                   "folders left by killed training runs and interrupted writes, switch the chat "
                   "off a version whose files are gone, migrate the schema.")
@click.option("--scan", "scan", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Also look here for leftovers of interrupted exports (repeatable; the folder "
                   "that holds your --out folders).")
def doctor(repair: bool, scan: tuple[Path, ...]) -> None:
    """Check that the database, the search index and the model registry agree (after a
    crash, a kill, a full disk). Exit status 1 while a problem remains."""
    from assistant.operations.doctor import diagnose

    report = diagnose(get_settings(), repair=repair, scan=scan)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        sys.exit(1)


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
def backup(dest: Path) -> None:
    """Back up the database, the search index and the trained versions to DEST (a new
    folder, or a file ending in .tar.gz). Safe while the app runs."""
    from assistant.operations.backup import backup as run_backup

    result = run_backup(get_settings(), dest)
    for line in result.summary():
        click.echo(line)


@click.command("restore")
@click.argument("src", type=click.Path(path_type=Path, exists=True))
@click.option("--force", is_flag=True,
              help="Restore even though another process has the database open (it keeps "
                   "serving its old data until restarted). A database being written is never "
                   "replaced.")
@click.option("--verify-only", is_flag=True, help="Check the backup's files and hashes, change nothing.")
def restore(src: Path, force: bool, verify_only: bool) -> None:
    """Replace the database, the search index and the trained versions with the backup
    SRC (a folder or .tar.gz made by `assistant backup`). The data there now is set aside
    in the data folder, not deleted. Then runs `assistant doctor --repair`."""
    from assistant.operations.backup import restore as run_restore
    from assistant.operations.backup_archive import verify

    if verify_only:
        if src.is_dir():
            manifest = verify(src)
        else:
            import tempfile

            from assistant.operations.backup_archive import extract_archive

            with tempfile.TemporaryDirectory() as tmp:
                extract_archive(src, Path(tmp))
                manifest = verify(Path(tmp))
        click.echo(f"{src}: {len(manifest['files'])} files, hashes match (backup of "
                   f"{manifest['created_at']}, schema {manifest['schema_revision']}).")
        return
    result = run_restore(get_settings(), src, force=force)
    c = result.manifest["counts"]
    click.echo(f"Restored {src} (made {result.manifest['created_at']}) into {result.data_dir}: "
               f"{c.get('conversations', 0)} conversations, {c.get('messages', 0)} messages, "
               f"{c.get('documents', 0)} documents, {c.get('versions', 0)} versions.")
    for path in result.set_aside:
        click.echo(f"The data that was there before is in {path}; delete it when you no longer "
                   "need it.")
    for line in result.doctor.lines():
        click.echo(line)
    if not result.doctor.ok:
        sys.exit(1)


def register(main: click.Group) -> None:
    for command in (doctor, backup, restore):
        main.add_command(command)
