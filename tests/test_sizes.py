"""The house stays readable: no function over 80 lines in the library, training or the UI,
and a module over 500 lines says in its docstring why it is that long."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("assistant", "alignment", "ui")
MAX_FUNCTION = 80
MAX_MODULE = 500


def sources(root: Path = ROOT) -> list[Path]:
    return [p for folder in FOLDERS for p in sorted((root / folder).rglob("*.py"))
            if "migrations" not in p.parts]


def long_functions(root: Path = ROOT) -> list[str]:
    out = []
    for path in sources(root):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return out


def long_modules_without_a_note(root: Path = ROOT) -> list[str]:
    out = []
    for path in sources(root):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_MODULE and f"{MAX_MODULE} lines" not in doc:
            out.append(f"{path.relative_to(root)} ({lines} lines)")
    return out


def test_no_function_is_over_80_lines():
    assert long_functions() == []


def test_a_module_over_500_lines_says_why():
    assert long_modules_without_a_note() == []


def test_the_checks_can_fail(tmp_path):
    (tmp_path / "assistant").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION))
    (tmp_path / "assistant" / "m.py").write_text('"""A module."""\n\n\ndef f():\n' + body + "\n" * MAX_MODULE)
    assert long_functions(tmp_path) == [f"assistant/m.py:4 f ({MAX_FUNCTION + 1} lines)"]
    assert long_modules_without_a_note(tmp_path) == [f"assistant/m.py ({MAX_MODULE + MAX_FUNCTION + 4} lines)"]
