"""The layers point one way: ``ui/`` and ``alignment/`` build on the library ``assistant/``,
never the reverse, inside the library the stores need no parser, and only the stores
(``assistant/storage/``) touch the ORM rows. Checked on the source
(every import, also those inside functions), so a lazy import cannot slip past."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported(source: str) -> set[str]:
    """Every module an import statement anywhere in ``source`` names (``from a import b``
    names ``a`` and ``a.b``: ``b`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(folder: str, forbidden: tuple[str, ...], root: Path = ROOT,
               skip: tuple[str, ...] = ()) -> list[str]:
    """Imports of ``forbidden`` modules (or their submodules) in ``folder``, but for the
    files under the subfolders ``skip`` (relative to ``root``)."""
    out = []
    for path in sorted((root / folder).rglob("*.py")):
        if any(path.is_relative_to(root / sub) for sub in skip):
            continue
        for name in sorted(imported(path.read_text(encoding="utf-8"))):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(root)} imports {name}")
    return out


def test_imports_are_found_wherever_they_stand():
    source = (
        "import os\n"
        "def f():\n"
        "    from alignment import runs\n"
        "    if True:\n"
        "        import ui.state as s\n"
        "from assistant.storage import Database\n"
    )
    found = imported(source)
    assert {"os", "alignment", "alignment.runs", "ui.state", "assistant.storage"} <= found
    assert "assistant.storage.Database" in found


@pytest.mark.parametrize("folder, forbidden", [
    # The library never reaches up: alignment and the UI import it, not the other way.
    ("assistant", ("alignment", "ui", "streamlit")),
    # Training builds on the library; the UI is above both.
    ("alignment", ("ui", "streamlit")),
    # Storage holds what it is given: parsing, chunking and ingest sit above it.
    ("assistant/storage", ("assistant.parsing", "assistant.chunking", "assistant.ingest")),
    # Engines take messages (assistant.messages), not the chat's prompt building.
    ("assistant/engines", ("assistant.prompting", "assistant.chat", "assistant.retrieval")),
])
def test_layers_point_one_way(folder, forbidden):
    assert violations(folder, forbidden) == []


@pytest.mark.parametrize("folder", ["assistant", "alignment", "ui"])
def test_only_storage_imports_the_orm_rows(folder):
    # The stores own the rows: everything above them gets and gives plain values.
    assert violations(folder, ("assistant.storage.schema",), skip=("assistant/storage",)) == []


def test_the_check_skips_the_folders_it_is_told_to(tmp_path):
    for sub in ("pkg", "pkg/storage"):
        (tmp_path / sub).mkdir()
    (tmp_path / "pkg" / "m.py").write_text("from pkg.storage import schema\n")
    (tmp_path / "pkg" / "storage" / "s.py").write_text("from pkg.storage.schema import Row\n")
    assert violations("pkg", ("pkg.storage.schema",), root=tmp_path, skip=("pkg/storage",)) == [
        "pkg/m.py imports pkg.storage.schema",
    ]


def test_retrieval_and_the_index_do_not_import_ingest():
    for module in ("retrieval.py", "index.py", "index_sync.py"):
        names = imported((ROOT / "assistant" / module).read_text(encoding="utf-8"))
        assert "assistant.ingest" not in names, module


def test_the_check_finds_a_violation(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n    from alignment.runs import load\n")
    assert violations("pkg", ("alignment",), root=tmp_path) == [
        "pkg/m.py imports alignment.runs", "pkg/m.py imports alignment.runs.load",
    ]


def test_modules_the_ui_imports_for_data_do_not_load_torch():
    modules = ["assistant.versions", "assistant.registry", "assistant.run_records", "alignment.runs",
               "assistant.storage", "assistant.errors", "assistant.passages"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
