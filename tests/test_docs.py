"""The documentation matches the code: docs/architecture.md names every module of the three
packages, the README stays short, and no relative link in README.md or docs/*.md points at a
file that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assistant", "alignment", "ui")
#: Migration scripts are named by their folder, not one by one.
MIGRATIONS = "assistant/storage/migrations/versions"
ARCHITECTURE = "docs/architecture.md"
README_MAX_LINES = 250

#: ``[text](target)`` and ``![alt](target)``; reference definitions ``[label]: target``.
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`+[^`\n]*`+")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def modules(root: Path = ROOT) -> list[str]:
    """Every module of the packages as a path relative to ``root`` (``assistant/chat/evidence.py``),
    ``__init__.py`` files and the migration scripts excepted."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if path.name == "__init__.py" or rel.startswith(MIGRATIONS + "/"):
                continue
            found.append(rel)
    return found


def mentioned(module: str, text: str) -> bool:
    """Whether ``text`` names ``module`` (``assistant/chat/evidence.py``) by its path or its dotted
    name (``assistant.chat.evidence``), as a whole name: ``assistant/cli.py`` is not named by
    ``alignment/cli.py``, nor ``assistant.cli`` by ``assistant.login.cli_auth``."""
    dotted = module.removesuffix(".py").replace("/", ".")
    by_path = re.compile(r"(?<![\w./-])" + re.escape(module) + r"(?![\w/])")
    by_name = re.compile(r"(?<![\w./-])" + re.escape(dotted) + r"(?!\w)")
    return bool(by_path.search(text) or by_name.search(text))


def missing_modules(root: Path = ROOT) -> list[str]:
    text = (root / ARCHITECTURE).read_text(encoding="utf-8")
    return [m for m in modules(root) if not mentioned(m, text)]


def links(markdown: str) -> list[str]:
    """The link targets of a Markdown text, outside code blocks and code spans."""
    text = CODE_SPAN.sub("code", FENCE.sub("", markdown))
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def broken_links(root: Path = ROOT) -> list[str]:
    """``file: target`` for every relative link that does not lead to an existing file or
    folder inside the repository (web addresses and in-page anchors are not checked)."""
    broken = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in links(doc.read_text(encoding="utf-8")):
            if SCHEME.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0].split("?", 1)[0]
            resolved = (root / path.lstrip("/")) if path.startswith("/") else (doc.parent / path)
            resolved = resolved.resolve()
            inside = resolved == root or root in resolved.parents
            if not inside or not resolved.exists():
                broken.append(f"{doc.relative_to(root).as_posix()}: {target}")
    return broken


def test_every_module_is_named_in_the_architecture():
    assert len(modules()) > 50  # the listing itself works
    missing = missing_modules()
    assert not missing, f"{ARCHITECTURE} does not name these modules (path or dotted name): {missing}"
    text = (ROOT / ARCHITECTURE).read_text(encoding="utf-8")
    assert "assistant/storage/migrations" in text, f"{ARCHITECTURE} does not name the migrations folder"


def test_readme_is_short_and_links_resolve():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, more than {README_MAX_LINES}"
    broken = broken_links()
    assert not broken, f"relative links to files that do not exist: {broken}"


def test_the_checks_can_fail(tmp_path):
    """The helpers catch what they are for, on a copy that has the faults."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "assistant" / "cli.py").write_text("")
    (tmp_path / "assistant" / "login").mkdir()
    (tmp_path / "assistant" / "login" / "cli_auth.py").write_text("")
    (tmp_path / "alignment" / "cli.py").write_text("")
    (tmp_path / "assistant" / "__init__.py").write_text("")
    (tmp_path / MIGRATIONS).mkdir(parents=True)
    (tmp_path / MIGRATIONS / "0001_first.py").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / ARCHITECTURE).write_text(
        "`alignment/cli.py` and `assistant.login.cli_auth`; see [engines](engines.md), [web](https://x.org)\n"
        "```\n[in a fence](nowhere.md)\n```\n"
    )
    (tmp_path / "README.md").write_text("[arch](docs/architecture.md#modules) [gone](docs/gone.md) "
                                        "[out](../outside.md) `[code](x.md)`\n")
    assert missing_modules(tmp_path) == ["assistant/cli.py"]
    assert broken_links(tmp_path) == ["README.md: docs/gone.md", "README.md: ../outside.md",
                                      "docs/architecture.md: engines.md"]
