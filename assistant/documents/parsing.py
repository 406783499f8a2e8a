"""Turn one uploaded file (its name and its bytes) into text sections.

The first stage of ingest: ``parse_document(name, data)`` -> :class:`ParsedDocument`, whose
sections keep where their text came from (the page of a PDF, the heading path of Markdown,
HTML and DOCX) so that answers can cite it. Nothing here touches the UI or the database;
every failure is a :class:`~assistant.errors.DocumentError` naming the file and saying what
to do.

The libraries do the format work (pypdf, python-docx, BeautifulSoup, charset_normalizer);
this module only walks what they return, under budgets (:class:`~assistant.config.ParseLimits`:
text length, unpacked size, table width and cells, markup elements, nesting, time) that are
checked while the file is read, so that a small hostile file is refused before it expands.
:mod:`assistant.documents.parse_worker` runs this in a child process with memory and CPU limits.

Longer than 500 lines on purpose: seven formats of 20-90 lines each share one budget
object, the section builder and the decoder, all private; split per format, each would
need those as public API for no other user.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import unicodedata
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import charset_normalizer
import docx
from bs4 import (
    BeautifulSoup,
    MarkupResemblesLocatorWarning,
    NavigableString,
    Tag,
    XMLParsedAsHTMLWarning,
)
from bs4.element import PageElement, PreformattedString
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from assistant.config import ParseLimits
from assistant.errors import (
    CorruptFile,
    EmptyFile,
    EncryptedFile,
    NoExtractableText,
    OverBudget,
    UnsupportedFile,
)
from assistant.storage.passages import format_location

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Section:
    """A run of text from one place in a document."""

    text: str  # whitespace-normalised, paragraph breaks kept as "\n\n"
    page: int | None = None  # 1-based page number (PDF only)
    heading: str | None = None  # "Install > Linux"; None before any heading

    @property
    def location(self) -> str | None:
        return format_location(self.page, self.heading)


@dataclass(frozen=True)
class ParsedDocument:
    name: str  # safe display filename, see safe_filename()
    kind: str  # "text", "markdown", "pdf", "html", "docx", "csv" or "json"
    sections: list[Section]  # never empty; every section has non-blank text


_KINDS = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".docx": "docx",
    ".csv": "csv",
    ".json": "json",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_KINDS)

# -- file names --------------------------------------------------------------------------------
_MAX_NAME_CHARS = 200
# A suffix is a short run after the last dot; anything longer is part of the name.
_SUFFIX = re.compile(r"\.[^.\s]{1,16}$")
# Controls (NUL included), invisible format characters such as the right-to-left override
# that can disguise "txt.exe" as "exe.txt", and lone surrogates that cannot be stored as UTF-8.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def safe_filename(name: str) -> str:
    """The name to show and store for an upload: its last path component, cleaned.

    ``"../../etc/passwd.txt"`` -> ``"passwd.txt"``; ``"C:\\Users\\x\\a.md"`` -> ``"a.md"``.
    Ordinary unicode letters stay; nothing is left -> ``"document"`` plus the suffix.
    """
    # Browsers send either separator depending on the uploader's OS; a path is never wanted.
    last = re.split(r"[\\/]", name)[-1]
    last = unicodedata.normalize("NFC", last)
    # Whitespace first, so that a newline or tab becomes a space rather than vanishing.
    last = " ".join(last.split())
    last = "".join(ch for ch in last if unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)
    last = last.strip()
    match = _SUFFIX.search(last)
    suffix = match.group() if match else ""
    stem = last[: len(last) - len(suffix)]
    # Leading dots would make a hidden file (or "..") wherever the name is used as a path.
    stem = stem.lstrip(". ").rstrip()
    if not stem:
        return "document" + suffix
    return stem[: _MAX_NAME_CHARS - len(suffix)].rstrip() + suffix


def _suffix(safe_name: str) -> str:
    match = _SUFFIX.search(safe_name)
    return match.group().lower() if match else ""


# -- budgets -----------------------------------------------------------------------------------
_clock = time.monotonic


class _Budget:
    """What one file may still use; each check raises :class:`OverBudget` naming the budget."""

    def __init__(self, name: str, limits: ParseLimits) -> None:
        self.name, self.limits = name, limits
        self.deadline = _clock() + limits.max_seconds
        self.chars = 0
        self.cells = 0

    def tick(self) -> None:
        """Called often in every loop: stop when the time budget is spent."""
        if _clock() > self.deadline:
            raise OverBudget(
                self.name, f"parsing took longer than {self.limits.max_seconds:g} s",
                f"{self.limits.max_seconds:g} s", "max_seconds",
            )

    def text(self, chars: int) -> None:
        self.chars += chars
        if self.chars > self.limits.max_text_chars:
            raise OverBudget(
                self.name, f"it holds more than {self.limits.max_text_chars:,} characters of text",
                f"{self.limits.max_text_chars:,} characters", "max_text_chars",
            )

    def row(self, columns: int) -> None:
        if columns > self.limits.max_columns:
            raise OverBudget(
                self.name, f"a table row has {columns:,} columns",
                f"{self.limits.max_columns:,} columns", "max_columns",
            )
        self.cells += columns
        if self.cells > self.limits.max_cells:
            raise OverBudget(
                self.name, f"its tables have more than {self.limits.max_cells:,} cells",
                f"{self.limits.max_cells:,} cells", "max_cells",
            )

    def elements(self, count: int, what: str) -> None:
        if count > self.limits.max_elements:
            raise OverBudget(
                self.name, f"it has about {count:,} {what}",
                f"{self.limits.max_elements:,} elements", "max_elements",
            )

    def nesting(self, depth: int | None) -> None:
        if depth is None or depth > self.limits.max_nesting:
            found = f"{depth:,} levels" if depth is not None else "too many levels"
            raise OverBudget(
                self.name, f"its values are nested {found} deep",
                f"{self.limits.max_nesting:,} levels", "max_nesting",
            )

    def unpacked(self, size: int) -> None:
        limit = int(self.limits.max_decompressed_mb * 1024 * 1024)
        if size > limit:
            raise OverBudget(
                self.name, f"it unpacks to more than {size / 1024 / 1024:,.0f} MB",
                f"{self.limits.max_decompressed_mb:g} MB unpacked", "max_decompressed_mb",
            )


# -- entry point -------------------------------------------------------------------------------
def parse_document(name: str, data: bytes, limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse one uploaded file into sections, within ``limits`` (default: the defaults).

    Raises a :class:`~assistant.errors.DocumentError` subclass, named by the safe filename,
    when the file cannot be used: unsupported type, empty, corrupt, encrypted, no text, or
    over a budget (:class:`~assistant.errors.OverBudget`).
    """
    safe = safe_filename(name)
    suffix = _suffix(safe)
    kind = _KINDS.get(suffix)
    if kind is None:
        what = f"'{suffix}'" if suffix else "(no extension)"
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedFile(safe, f"unsupported file type {what}; supported: {supported}")
    data = bytes(data)
    if not data:
        raise EmptyFile(safe, "the file is empty (0 bytes); check that you picked the right file")

    budget = _Budget(safe, limits or ParseLimits())
    if kind in _BINARY_PARSERS:
        sections = _BINARY_PARSERS[kind](safe, data, budget)
    else:
        text = _decode_text(safe, data)
        budget.text(len(text))
        if not text.strip():
            raise EmptyFile(safe, "contains no text (only whitespace)")
        sections = _TEXT_PARSERS[kind](safe, text, budget)

    sections, longest = _leave_out_data(sections)
    sections = [s for s in sections if s.text.strip()]
    if not sections and longest:
        raise NoExtractableText(
            safe, f"holds encoded data, not text (a run of {longest:,} letters and digits "
            "without a space: base64, hex or similar); decode it and upload the result",
        )
    if not sections:
        raise NoExtractableText(safe, "contains no extractable text")
    logger.debug("parsed %s as %s: %d sections", safe, kind, len(sections))
    return ParsedDocument(name=safe, kind=kind, sections=sections)


# -- encoded data ------------------------------------------------------------------------------
# A run this long of base64 / hex characters is data (an inline image, a key, a blob pasted
# into a file), never words. Left in, it costs the most of anything: the embedding model's
# WordPiece tokenizer reads random letters at about 90 KB/s (50 times slower than prose),
# chunking and embedding tokenize it several times over, and it becomes thousands of chunks
# of noise (a 4 MB blob took over 200 s).
DATA_RUN_CHARS = 1000
_DATA_RUN = re.compile(r"[A-Za-z0-9+/=_-]{%d,}" % DATA_RUN_CHARS)
DATA_MARK = "[encoded data left out]"


def _leave_out_data(sections: list[Section]) -> tuple[list[Section], int]:
    """Sections with each run of encoded data replaced by :data:`DATA_MARK` (a section left
    with nothing else is dropped), and the length of the longest run (0: none)."""
    longest = 0
    out = []
    for section in sections:
        runs = [len(m) for m in _DATA_RUN.findall(section.text)] if len(section.text) >= DATA_RUN_CHARS else []
        if not runs:
            out.append(section)
            continue
        longest = max(longest, *runs)
        text = _DATA_RUN.sub(DATA_MARK, section.text)
        if text.replace(DATA_MARK, "").strip():
            out.append(Section(text, section.page, section.heading))
    return out, longest


# -- text normalisation ------------------------------------------------------------------------
_HSPACE = re.compile(r"[^\S\n]+")
# After splitlines() no line break is left, so every remaining control is noise; \ufeff is a
# stray byte-order mark (e.g. from concatenated files).
_NOISE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ufeff\ud800-\udfff]")
_BLANK_RUN = re.compile(r"\n{3,}")


def _normalise(text: str, *, keep_indent: bool = False) -> str:
    """Collapse runs of spaces, drop control characters, keep line and paragraph breaks.

    ``keep_indent`` keeps each line's leading whitespace, for sources where indentation
    means something (code blocks in Markdown or plain text).
    """
    lines = []
    for line in text.splitlines():
        line = _NOISE.sub("", line).rstrip()
        body = line.lstrip()
        indent = line[: len(line) - len(body)] if keep_indent else ""
        lines.append(indent + _HSPACE.sub(" ", body))
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")


class _SectionBuilder:
    """Collects text under the current heading path; a new heading closes the section."""

    def __init__(self, *, keep_indent: bool = False) -> None:
        self._keep_indent = keep_indent
        self._trail: list[tuple[int, str]] = []  # (level, title), outermost first
        self._parts: list[str] = []
        self.sections: list[Section] = []

    def add(self, text: str) -> None:
        self._parts.append(text)

    def line_break(self, count: int) -> None:
        """End the text so far with at least ``count`` line breaks (2: a paragraph break)."""
        tail = "".join(self._parts[-4:])
        missing = count - tail[len(tail.rstrip()) :].count("\n")
        if self._parts and missing > 0:
            self._parts.append("\n" * missing)

    def heading(self, level: int, title: str) -> None:
        self.flush()
        # A heading closes every open heading at its own level or deeper.
        while self._trail and self._trail[-1][0] >= level:
            self._trail.pop()
        if title:
            self._trail.append((level, title))

    def flush(self) -> None:
        text = _normalise("".join(self._parts), keep_indent=self._keep_indent)
        self._parts = []
        if text.strip():
            path = " > ".join(title for _, title in self._trail) or None
            self.sections.append(Section(text=text, heading=path))

    def finish(self) -> list[Section]:
        self.flush()
        return self.sections


# -- decoding text-like files ------------------------------------------------------------------
# Longest first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_SNIFF_BYTES = 8192
# Among encodings charset_normalizer rates equally plausible, the ones Western text most
# likely came from (Windows' default codepage, then its ISO subset).
_PREFERRED_LEGACY = ("cp1252", "latin_1")
_MAX_CONTROL_SHARE = 0.1
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")


def _decode_text(name: str, data: bytes) -> str:
    """Decode a text upload: BOM, UTF-8, BOM-less UTF-16, then charset detection."""
    text = _decode_by_bom(data)
    if text is None:
        head = data[:_SNIFF_BYTES]
        if b"\x00" in head:
            # UTF-8 and single-byte text never contain NUL; UTF-16 has one in most code units.
            text = _decode_bomless_utf16(head, data)
            if text is None:
                raise _binary(name, data)
        else:
            text = _decode_utf8_or_detect(data)
    if text is None or _looks_binary(text):
        raise _binary(name, data)
    return text


def _binary(name: str, data: bytes = b"") -> CorruptFile:
    what = _what_it_is(data)
    return CorruptFile(
        name,
        "looks like a binary file, not text"
        + (f" (its bytes are {what})" if what else "")
        + "; was it renamed from another format? Upload the original file (or export it as "
        "text first)",
    )


# What a file's first bytes say it is, for a file whose name says otherwise. Only formats
# whose signature cannot begin ordinary text.
_SIGNATURES = (
    (b"\x7fELF", "a Linux program (ELF)"),
    (b"MZ", "a Windows program (EXE or DLL)"),
    (b"\xcf\xfa\xed\xfe", "a macOS program (Mach-O)"),
    (b"\xce\xfa\xed\xfe", "a macOS program (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "a macOS program or a Java class"),
    (b"%PDF-", "a PDF document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document (.doc, .xls or .ppt)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x00asm", "a WebAssembly program"),
)
_ZIP_KINDS = (("word/", "a Word document (.docx)"), ("xl/", "an Excel workbook (.xlsx)"),
              ("ppt/", "a PowerPoint presentation (.pptx)"))


def _what_it_is(data: bytes) -> str | None:
    """"a Linux program (ELF)", "a PNG image", ... or None when the bytes do not say."""
    if data.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, ValueError, OSError):
            return "a zip archive"
        for prefix, what in _ZIP_KINDS:
            if any(n.startswith(prefix) for n in names):
                return what
        return "a zip archive"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "a WebP image"
    return next((what for magic, what in _SIGNATURES if data.startswith(magic)), None)


def _decode_by_bom(data: bytes) -> str | None:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                return None  # a BOM followed by garbage: let the binary verdict stand
    return None


def _decode_bomless_utf16(head: bytes, data: bytes) -> str | None:
    even_nuls = head[0::2].count(0)
    odd_nuls = head[1::2].count(0)
    half = max(len(head) // 2, 1)
    # Mostly-ASCII UTF-16 has a NUL in every other byte; random binary has a NUL in ~1/256.
    if max(even_nuls, odd_nuls) < 0.3 * half:
        return None
    codec = "utf-16-le" if odd_nuls > even_nuls else "utf-16-be"
    try:
        return data.decode(codec)
    except UnicodeDecodeError:
        return None


def _decode_utf8_or_detect(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    # On short Western text charset_normalizer ranks many single-byte codepages as equally
    # plausible and may pick, say, cp1250, which turns "crème" into "crčme".
    tied = [
        m
        for m in matches
        if abs(m.chaos - best.chaos) < 0.01 and abs(m.coherence - best.coherence) < 0.01
    ]
    for codec in _PREFERRED_LEGACY:
        if any(codec in m.could_be_from_charset for m in tied):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                continue
    logger.debug("detected encoding %s", best.encoding)
    return str(best)


def _looks_binary(text: str) -> bool:
    sample = text[:_SNIFF_BYTES]
    controls = sum(
        1 for ch in sample if ch not in _TEXT_CONTROLS and unicodedata.category(ch) == "Cc"
    )
    return controls > _MAX_CONTROL_SHARE * max(len(sample), 1)


# -- plain text, CSV, JSON ---------------------------------------------------------------------
def _parse_text(name: str, text: str, budget: _Budget) -> list[Section]:
    return [Section(_normalise(text, keep_indent=True))]


# Any of these may separate a CSV file's columns; counting them all over-counts a row's width
# only where a quoted cell holds them, which is rare in a row near the budget.
_CSV_DELIMITERS = (",", ";", "\t", "|")


def _parse_csv(name: str, text: str, budget: _Budget) -> list[Section]:
    """Rows stay lines (splitting cells would lose nothing a reader needs), once the table
    is known to fit the width and cell budgets: a row is measured before anything is built
    from it."""
    for number, line in enumerate(text.splitlines()):
        if number % 4096 == 0:
            budget.tick()
        budget.row(max(line.count(d) for d in _CSV_DELIMITERS) + 1)
    return _parse_text(name, text, budget)


def _parse_json(name: str, text: str, budget: _Budget) -> list[Section]:
    # Counted before json builds anything: each value costs tens of bytes once loaded. Commas
    # inside strings count too, which errs on the safe side.
    budget.elements(text.count(",") + text.count("[") + text.count("{"), "JSON values")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFile(
            name,
            f"is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
            "fix it, or rename it to .txt to upload it as plain text",
        ) from exc
    except RecursionError:
        budget.nesting(None)
        raise  # unreachable: nesting(None) always raises
    budget.nesting(_json_depth(obj))
    # Pretty-printing puts one value per line, which chunks and reads far better than the
    # (often single-line) original; already normalised, so no _normalise() here.
    return [Section(json.dumps(obj, indent=2, ensure_ascii=False))]


def _json_depth(obj: object) -> int:
    """How deep containers nest (iteratively: a hostile file must not exhaust the stack)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in value if isinstance(item, (dict, list)))
    return deepest


# -- Markdown ----------------------------------------------------------------------------------
# CommonMark ATX heading: up to 3 spaces, 1-6 '#', then a space or the end of the line.
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def _parse_markdown(name: str, text: str, budget: _Budget) -> list[Section]:
    builder = _SectionBuilder(keep_indent=True)
    fence: str | None = None  # the opening fence while inside a fenced code block
    for number, line in enumerate(text.splitlines()):
        if number % 4096 == 0:
            budget.tick()
        fence_match = _FENCE.match(line)
        if fence is not None:
            # Only a bare fence of the same character, at least as long, closes the block.
            closes = fence_match and not fence_match.group(2).strip()
            if closes and fence_match.group(1).startswith(fence):
                fence = None
        elif fence_match and not _is_inline_code(fence_match):
            fence = fence_match.group(1)
        elif heading := _ATX.match(line):
            title = _ATX_CLOSING.sub("", heading.group(2) or "").strip()
            builder.heading(len(heading.group(1)), title)
            continue
        builder.add(line + "\n")
    return builder.finish()


def _is_inline_code(fence: re.Match[str]) -> bool:
    # "```a``` b" is inline code, not a fence: a backtick fence's info string has no backtick.
    return fence.group(1).startswith("`") and "`" in fence.group(2)


# -- HTML --------------------------------------------------------------------------------------
_HTML_DROP = ("script", "style", "noscript", "template", "head")
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# Elements a browser renders on their own lines; without a break here their words would run
# together ("<p>one</p><p>two</p>" -> "onetwo").
_HTML_PARAGRAPHS = frozenset(
    "address article aside blockquote body details dialog div dl fieldset figcaption figure "
    "footer form header hr html main nav ol p section summary table ul".split()
)
_HTML_LINES = frozenset({"li", "tr", "dt", "dd", "caption", "option"})
_HTML_CELLS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")


def _parse_html(name: str, text: str, budget: _Budget) -> list[Section]:
    # BeautifulSoup's tree costs about a kilobyte per element: count the tags it would build
    # (every "<" opens one, except closing tags) before it builds them.
    budget.elements(text.count("<") - text.count("</"), "HTML elements")
    with warnings.catch_warnings():
        # A short HTML file that looks like a URL or an XHTML file is still parsed right.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(text, "html.parser")
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()

    builder = _SectionBuilder()
    # An explicit stack rather than recursion: hostile pages nest thousands of levels deep.
    # Each entry is (node, closing); a closing entry ends a block element.
    stack: list[tuple[PageElement, bool]] = [(soup, False)]
    visited = 0
    while stack:
        node, closing = stack.pop()
        visited += 1
        if visited % 4096 == 0:
            budget.tick()
        if closing:
            builder.line_break(2 if node.name in _HTML_PARAGRAPHS else 1)
        elif isinstance(node, NavigableString):
            # Comments, doctypes, CDATA and processing instructions are not page text.
            if not isinstance(node, PreformattedString):
                builder.add(_WHITESPACE.sub(" ", str(node)))
        elif isinstance(node, Tag):
            _visit_html_tag(node, builder, stack)
    return builder.finish()


def _visit_html_tag(
    tag: Tag, builder: _SectionBuilder, stack: list[tuple[PageElement, bool]]
) -> None:
    name = tag.name
    if name in _HTML_HEADINGS:
        builder.heading(_HTML_HEADINGS[name], " ".join(tag.get_text(" ").split()))
        return
    if name == "br":
        builder.add("\n")
        return
    if name == "pre":
        builder.line_break(2)
        builder.add(tag.get_text())
        builder.line_break(2)
        return
    if name in _HTML_PARAGRAPHS or name in _HTML_LINES:
        builder.line_break(2 if name in _HTML_PARAGRAPHS else 1)
        stack.append((tag, True))
    elif name in _HTML_CELLS and tag.find_previous_sibling(_HTML_CELLS) is not None:
        builder.add(" | ")
    stack.extend((child, False) for child in reversed(tag.contents))


# -- DOCX --------------------------------------------------------------------------------------
# A paragraph is (style name, text); a table is its rows of cell texts.
_DocxBlock = tuple[str | None, str] | list[list[str]]
_DOCX_HEADING = re.compile(r"heading\s*(\d*)", re.IGNORECASE)


def _parse_docx(name: str, data: bytes, budget: _Budget) -> list[Section]:
    builder = _SectionBuilder()
    _check_docx_parts(name, data, budget)
    for block in _read_docx_blocks(name, data, budget):
        if isinstance(block, list):
            builder.add("\n".join(" | ".join(row) for row in block if any(row)) + "\n\n")
            continue
        style, text = block
        level = _docx_heading_level(style)
        if level is not None and text.strip():
            builder.heading(level, " ".join(text.split()))
        else:
            builder.add(text + "\n\n")
    return builder.finish()


_ZIP_READ = 1 << 20
# The parts python-docx parses into an XML tree; pictures and fonts are only held as bytes.
_XML_PART = re.compile(r"\.(xml|rels)$", re.IGNORECASE)


def _check_docx_parts(name: str, data: bytes, budget: _Budget) -> None:
    """Refuse a .docx whose parts unpack beyond the budgets, before python-docx unpacks them.

    The sizes in the zip directory bound what zipfile will ever unpack (it stops at the
    declared size, and a part that would unpack further fails its checksum), so a zip bomb
    is refused from its directory, without unpacking anything. The XML parts are then read
    in slices, counting their elements, before any tree is built from them."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        parts = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # python-docx reports the damage in its own words below
    budget.unpacked(sum(part.file_size for part in parts))
    elements = 0
    for part in parts:
        if not _XML_PART.search(part.filename):
            continue
        try:
            with archive.open(part) as stream:
                while piece := stream.read(_ZIP_READ):
                    elements += piece.count(b"<") - piece.count(b"</")
                    budget.elements(elements, "XML elements")
                    budget.tick()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
            return  # damaged or unsupported compression: python-docx says so below


def _read_docx_blocks(name: str, data: bytes, budget: _Budget) -> list[_DocxBlock]:
    """Everything python-docx gives us, as plain values; any failure in it is the file's."""
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[_DocxBlock] = []
        for item in document.iter_inner_content():
            budget.tick()
            if isinstance(item, Paragraph):
                style = item.style
                text = item.text
                budget.text(len(text))
                blocks.append((style.name if style is not None else None, text))
            elif isinstance(item, Table):
                rows = []
                for row in item.rows:
                    # Measured on the XML before python-docx lays out the row's grid.
                    budget.row(len(row._tr.tc_lst))
                    rows.append(_docx_row(row.cells))
                    budget.text(sum(len(cell) for cell in rows[-1]))
                blocks.append(rows)
        return blocks
    except OverBudget:
        raise
    # python-docx raises whatever zipfile, lxml or its own code hit (BadZipFile, KeyError for a
    # missing part, ValueError for another Office type, XMLSyntaxError...). Only python-docx
    # reading is inside this try, so a bug of ours is not disguised as a corrupt file.
    except Exception as exc:
        logger.info("%s: python-docx could not read it: %r", name, exc)
        what = _what_it_is(data)
        if what and "(.docx)" not in what and what != "a zip archive":
            raise CorruptFile(
                name, f"is not a valid .docx file: its bytes are {what}; was it renamed? Upload "
                "the original file, or open it in a word processor and save it as .docx",
            ) from exc
        raise CorruptFile(
            name,
            f"is not a valid .docx file ({_describe(exc)}); if it is an old .doc file or was "
            "renamed, open it in a word processor, save it as .docx and upload again",
        ) from exc


def _docx_row(cells: tuple[_Cell, ...]) -> list[str]:
    # A cell spanning several grid columns comes back once per column: keep it once.
    unique = [cell for i, cell in enumerate(cells) if i == 0 or cell is not cells[i - 1]]
    return [" ".join(cell.text.split()) for cell in unique]


def _docx_heading_level(style: str | None) -> int | None:
    if not style:
        return None
    if style.strip().lower() == "title":
        return 0  # above "Heading 1", so the chapters nest under the document title
    match = _DOCX_HEADING.match(style.strip())
    if match is None:
        return None
    return min(int(match.group(1) or 1), 9)


# -- PDF ---------------------------------------------------------------------------------------
def _parse_pdf(name: str, data: bytes, budget: _Budget) -> list[Section]:
    sections = []
    for number, text in enumerate(_read_pdf_pages(name, data, budget), start=1):
        text = _reflow(_normalise(text))
        if text:
            sections.append(Section(text=text, page=number))
    if not sections:
        raise NoExtractableText(
            name, "has no extractable text: it looks scanned (images only); run OCR on it first"
        )
    return sections


# A line at least this share of a page's full line length was wrapped by the layout, not ended
# by the author; a line starting like a list item begins a new line whatever came before.
_FULL_LINE_SHARE = 0.8
_LIST_ITEM = re.compile(r"^\s*(?:[-*•·▪‣◦]|\d{1,3}[.)]|[a-z][.)])\s")


def _reflow(text: str) -> str:
    """Join the lines of a PDF page that the layout wrapped inside a paragraph.

    pypdf gives a page's text line by line as laid out, so a paragraph comes back cut at
    every line's end ("... The quick\nbrown fox ..."): a citation reads badly, and a
    sentence split across lines looks like two to the chunker. A line as long as the page's
    full lines continues on the next; a shorter line ends its paragraph (a heading, the
    last line of a paragraph, a list item) and keeps its break. A line ending in a hyphen is
    joined without a space. pypdf gives no sign of the gap between paragraphs, so one whose
    last line happens to be full runs on into the next (as it ran on before, on its own line)."""
    lines = text.split("\n")
    lengths = sorted(len(line) for line in lines if line.strip())
    if len(lengths) < 3:
        return text
    full = lengths[int(0.9 * (len(lengths) - 1))]
    out: list[str] = []
    joined = False  # whether the next line continues the last one in out
    for line in lines:
        if joined and line.strip() and not _LIST_ITEM.match(line):
            sep = "" if out[-1].endswith("-") else " "
            out[-1] = out[-1] + sep + line.strip()
        else:
            out.append(line)
        joined = bool(line.strip()) and len(line) >= _FULL_LINE_SHARE * full
    return "\n".join(out)


def _read_pdf_pages(name: str, data: bytes, budget: _Budget) -> list[str]:
    """The raw text of every page. Library failures become CorruptFile / EncryptedFile."""
    reader = _open_pdf(name, data)
    pages = []
    try:
        count = len(reader.pages)
    except DependencyError:
        raise  # our installation lacks a decryption backend: not the file's fault
    except Exception as exc:
        raise _corrupt_pdf(name, exc) from exc
    for index in range(count):
        budget.tick()
        # pypdf raises anything from PdfReadError to KeyError or zlib.error on damaged
        # content; the try holds only the library call.
        try:
            pages.append(reader.pages[index].extract_text() or "")
        except Exception as exc:
            raise _corrupt_pdf(name, exc, page=index + 1) from exc
        budget.text(len(pages[-1]))
    return pages


def _open_pdf(name: str, data: bytes) -> PdfReader:
    # A PDF's header may follow some junk, but within its first kilobyte.
    what = _what_it_is(data)
    if b"%PDF-" not in data[:1024] and what:
        raise CorruptFile(
            name, f"is not a readable PDF: its bytes are {what}, not a PDF; was it renamed? "
            "Upload the original file, or convert it to PDF first",
        )
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    except Exception as exc:
        raise _corrupt_pdf(name, exc) from exc
    if not encrypted:
        return reader
    # Many PDFs are "encrypted" only to set permissions, with an empty user password.
    try:
        opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
    except DependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds here; all mean "not opened"
        logger.info("%s: pypdf could not decrypt it: %r", name, exc)
        opened = False
    if not opened:
        raise EncryptedFile(
            name, "is encrypted with a password; decrypt it (e.g. print to PDF) and upload again"
        )
    return reader


def _corrupt_pdf(name: str, exc: Exception, page: int | None = None) -> CorruptFile:
    logger.info("%s: pypdf could not read it (page %s): %r", name, page, exc)
    where = f"page {page}: " if page is not None else ""
    return CorruptFile(
        name,
        f"is not a readable PDF ({where}{_describe(exc)}); it may be damaged or only partly "
        "downloaded: download or export it again",
    )


def _describe(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_TEXT_PARSERS: dict[str, Callable[[str, str, _Budget], list[Section]]] = {
    "text": _parse_text,
    "csv": _parse_csv,
    "json": _parse_json,
    "markdown": _parse_markdown,
    "html": _parse_html,
}
_BINARY_PARSERS: dict[str, Callable[[str, bytes, _Budget], list[Section]]] = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
}
