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


def imported(source: str, *, runtime: bool = False) -> set[str]:
    """Every module an import statement anywhere in ``source`` names (``from a import b``
    names ``a`` and ``a.b``: ``b`` may be a module). ``runtime``: leave out the imports under
    ``if TYPE_CHECKING:`` (for annotations only, never executed)."""
    tree = ast.parse(source)
    if runtime:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
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
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ui.state\nimport os\n"
    assert "ui.state" in imported(typing_only) and "ui.state" not in imported(typing_only, runtime=True)


@pytest.mark.parametrize("folder, forbidden", [
    # The library never reaches up: alignment and the UI import it, not the other way.
    ("assistant", ("alignment", "ui", "streamlit")),
    # Training builds on the library; the UI is above both.
    ("alignment", ("ui", "streamlit")),
])
def test_layers_point_one_way(folder, forbidden):
    assert violations(folder, forbidden) == []


#: What each part of the library (a package of assistant/) may import of the other parts.
#: Every part may import the shared modules at the top of assistant/ (config, errors, atomic,
#: words, ...); bootstrap and the CLI, at the top, wire the parts together.
PARTS = {
    # Storage holds what it is given: parsing, chunking and ingest sit above it.
    "storage": (),
    # Engines take messages (engines/messages.py), not the chat's prompt building.
    "engines": (),
    "documents": ("storage",),
    "login": ("storage",),
    "chat": ("documents", "engines", "storage"),
    "operations": ("documents", "storage"),
}


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_part_imports_only_the_parts_below_it(part):
    forbidden = tuple(f"assistant.{other}" for other in PARTS if other != part and other not in PARTS[part])
    assert violations(f"assistant/{part}", forbidden) == []


def test_every_part_says_what_it_owns_and_may_import():
    folders = sorted(p.parent.name for p in (ROOT / "assistant").glob("*/__init__.py"))
    assert folders == sorted(PARTS)
    for part in PARTS:
        doc = ast.get_docstring(ast.parse((ROOT / "assistant" / part / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "May import" in doc, part


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_no_two_modules_import_each_other():
    """Not even inside a function: a pair that needs each other is one module, or a third
    one holds what they share. (Imports for annotations only, under TYPE_CHECKING, are
    never executed and do not count.)"""
    graph: dict[str, set[str]] = {}
    for folder in ("assistant", "alignment", "ui"):
        for path in (ROOT / folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            graph[module_name(path)] = imported(path.read_text(encoding="utf-8"), runtime=True)
    pairs = sorted({tuple(sorted((a, b))) for a, names in graph.items() for b in names
                    if b in graph and b != a and a in graph[b]})
    assert pairs == []


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
        names = imported((ROOT / "assistant" / "documents" / module).read_text(encoding="utf-8"))
        assert "assistant.documents.ingest" not in names, module


def test_the_check_finds_a_violation(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n    from alignment.runs import load\n")
    assert violations("pkg", ("alignment",), root=tmp_path) == [
        "pkg/m.py imports alignment.runs", "pkg/m.py imports alignment.runs.load",
    ]


def test_modules_the_ui_imports_for_data_do_not_load_torch():
    modules = ["assistant.versions", "assistant.registry", "assistant.run_records", "alignment.runs",
               "assistant.storage", "assistant.errors", "assistant.storage.passages"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
