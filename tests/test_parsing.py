"""assistant.documents.parsing on real files built here: PDFs from fpdf2 (encrypted with pypdf), DOCX
from python-docx, and text in the encodings people actually upload."""

from __future__ import annotations

import io
import json
import random
import zipfile

import docx
import pytest
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter

from assistant.errors import (
    CorruptFile,
    DocumentError,
    EmptyFile,
    EncryptedFile,
    NoExtractableText,
    UnsupportedFile,
)
from assistant.documents.parsing import (
    SUPPORTED_SUFFIXES,
    ParsedDocument,
    Section,
    parse_document,
    safe_filename,
)


# -- builders ----------------------------------------------------------------------------------
def make_pdf(pages: list[str | None]) -> bytes:
    """One page per entry: its text, or None for a page holding only a picture."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text is None:
            picture = io.BytesIO()
            Image.new("RGB", (40, 20), (200, 30, 30)).save(picture, format="PNG")
            pdf.image(picture, x=20, y=20, w=80)
            pdf.rect(10, 10, 100, 50)
        else:
            pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def encrypt_pdf(data: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.add_paragraph("Prepared for the operations team.")
    document.add_heading("Deployment Guide", level=0)  # the "Title" style
    document.add_paragraph("How to run the service.")
    document.add_heading("Install", level=1)
    document.add_paragraph("Download the release.")
    document.add_heading("Linux", level=2)
    document.add_paragraph("Use the tarball.")
    table = document.add_table(rows=2, cols=3)
    for row, cells in zip(table.rows, [("Name", "Port", "Protocol"), ("api", "8080", "http")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    document.add_heading("Usage", level=1)
    document.add_paragraph("Start it with the CLI.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def assert_names_file(exc: pytest.ExceptionInfo[DocumentError], filename: str) -> None:
    assert exc.value.filename == filename
    assert str(exc.value).startswith(f"{filename}: ")


# -- Section / interface -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "location"),
    [
        (Section("x", page=3), "page 3"),
        (Section("x", heading="Install > Linux"), "Install > Linux"),
        (Section("x", page=3, heading="Install"), "page 3 · Install"),
        (Section("x"), None),
    ],
)
def test_section_location(section, location):
    assert section.location == location


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == {
        ".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx", ".csv", ".json"
    }


# -- file names --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\x\\a.md", "a.md"),
        ("a\x00b.txt", "ab.txt"),
        ("Résumé 2024.pdf", "Résumé 2024.pdf"),
        ("Re\u0301sume\u0301.pdf", "Résumé.pdf"),  # macOS decomposed accents, composed
        ("报告 📄 final.docx", "报告 📄 final.docx"),
        ("  my \t notes\n.md", "my notes.md"),
        ("..\\..\\.hidden.txt", "hidden.txt"),
        ("invoice\u202etxt.exe", "invoicetxt.exe"),  # right-to-left override removed
        ("bell\x07\x1b[31m.txt", "bell[31m.txt"),
        ("..", "document"),
        ("", "document"),
        ("dir/", "document"),
        ("../.pdf", "document.pdf"),
        ("\x00\x01.json", "document.json"),
    ],
)
def test_safe_filename(raw, safe):
    assert safe_filename(raw) == safe


def test_safe_filename_limits_length_keeping_suffix():
    safe = safe_filename("x" * 500 + ".markdown")
    assert len(safe) == 200
    assert safe.endswith("x.markdown")


def test_parse_uses_the_safe_name():
    doc = parse_document("../../uploads\\notes\x00.txt", b"hello")
    assert doc == ParsedDocument(name="notes.txt", kind="text", sections=[Section("hello")])


def test_errors_use_the_safe_name():
    with pytest.raises(UnsupportedFile) as exc:
        parse_document("../bin/evil\x00.exe", b"MZ\x90\x00")
    assert_names_file(exc, "evil.exe")


# -- PDF ---------------------------------------------------------------------------------------
def test_pdf_one_section_per_page_with_page_numbers():
    data = make_pdf(["Alpha page talks about apples.", "Beta page about bananas.", "Gamma end."])
    doc = parse_document("fruit.pdf", data)
    assert doc.kind == "pdf"
    assert [s.page for s in doc.sections] == [1, 2, 3]
    assert "apples" in doc.sections[0].text
    assert "bananas" in doc.sections[1].text
    assert doc.sections[1].location == "page 2"
    assert all(s.heading is None for s in doc.sections)


def test_pdf_blank_and_picture_pages_are_skipped_but_numbering_kept():
    doc = parse_document("mixed.pdf", make_pdf(["First text.", None, "", "Fourth text."]))
    assert [s.page for s in doc.sections] == [1, 4]
    assert "Fourth" in doc.sections[1].text


def test_pdf_with_only_pictures_needs_ocr():
    with pytest.raises(NoExtractableText) as exc:
        parse_document("scan.pdf", make_pdf([None, None]))
    assert_names_file(exc, "scan.pdf")
    assert "OCR" in str(exc.value)


def test_pdf_encrypted_with_user_password():
    data = encrypt_pdf(make_pdf(["Top secret plans."]), user_password="hunter2")
    with pytest.raises(EncryptedFile) as exc:
        parse_document("secret.pdf", data)
    assert_names_file(exc, "secret.pdf")
    assert "password" in str(exc.value)


def test_pdf_encrypted_with_empty_user_password_opens():
    data = encrypt_pdf(make_pdf(["Readable but restricted."]), user_password="")
    assert PdfReader(io.BytesIO(data)).is_encrypted
    doc = parse_document("restricted.pdf", data)
    assert "Readable but restricted." in doc.sections[0].text


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(make_pdf(["Some text here."] * 3)[:700], id="truncated"),
        pytest.param(random.Random(1).randbytes(4000), id="random-bytes"),
        pytest.param(b"%PDF-1.7\n" + random.Random(2).randbytes(4000), id="header-then-garbage"),
        pytest.param(b"<html>404 Not Found</html>", id="html-saved-as-pdf"),
    ],
)
def test_pdf_corrupt(data):
    with pytest.raises(CorruptFile) as exc:
        parse_document("broken.pdf", data)
    assert_names_file(exc, "broken.pdf")
    assert "not a readable PDF" in str(exc.value)


# -- DOCX --------------------------------------------------------------------------------------
def test_docx_headings_and_table():
    doc = parse_document("guide.docx", make_docx())
    assert doc.kind == "docx"
    by_heading = {s.heading: s.text for s in doc.sections}
    assert list(by_heading) == [
        None,
        "Deployment Guide",
        "Deployment Guide > Install",
        "Deployment Guide > Install > Linux",
        "Deployment Guide > Usage",
    ]
    assert by_heading[None] == "Prepared for the operations team."
    assert by_heading["Deployment Guide > Install > Linux"] == (
        "Use the tarball.\n\nName | Port | Protocol\napi | 8080 | http"
    )
    # Heading text is the section's path, not part of its body.
    assert "Install" not in by_heading["Deployment Guide > Install"]


def test_docx_merged_cell_appears_once():
    document = docx.Document()
    table = document.add_table(rows=1, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 1))
    merged.text = "wide"
    table.cell(0, 2).text = "narrow"
    out = io.BytesIO()
    document.save(out)
    assert parse_document("t.docx", out.getvalue()).sections[0].text == "wide | narrow"


def _zip(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), id="old-doc-renamed"),
        pytest.param(make_docx()[:1500], id="truncated"),
        pytest.param(_zip({"hello.txt": "not office"}), id="zip-without-parts"),
        pytest.param(
            _zip({"[Content_Types].xml": "<Types><broken", "word/document.xml": "<w:document/>"}),
            id="broken-xml",
        ),
    ],
)
def test_docx_corrupt(data):
    with pytest.raises(CorruptFile) as exc:
        parse_document("report.docx", data)
    assert_names_file(exc, "report.docx")
    assert "not a valid .docx file" in str(exc.value)


def test_docx_without_text():
    document = docx.Document()
    document.add_paragraph("")
    document.add_heading("Only a heading", level=1)
    out = io.BytesIO()
    document.save(out)
    with pytest.raises(NoExtractableText) as exc:
        parse_document("blank.docx", out.getvalue())
    assert_names_file(exc, "blank.docx")


# -- Markdown ----------------------------------------------------------------------------------
MARKDOWN = """\
Intro before any heading.

# Install

Get the package.

## Linux ##

Use apt.

```bash
# not a heading
apt install thing
```

### Debian

Older releases.

## macOS

Use brew.

#hashtag is not a heading either

# Usage

Run it.
"""


def test_markdown_heading_paths_and_fenced_code():
    doc = parse_document("README.md", MARKDOWN.encode())
    assert doc.kind == "markdown"
    assert [s.heading for s in doc.sections] == [
        None,
        "Install",
        "Install > Linux",
        "Install > Linux > Debian",
        "Install > macOS",
        "Usage",
    ]
    linux = doc.sections[2].text
    assert "# not a heading\napt install thing" in linux
    assert not linux.startswith("##")
    assert doc.sections[4].text == "Use brew.\n\n#hashtag is not a heading either"


def test_markdown_suffix_and_only_headings():
    assert parse_document("a.markdown", b"# T\nbody").sections == [Section("body", heading="T")]
    with pytest.raises(NoExtractableText) as exc:
        parse_document("empty.md", b"# Title\n\n## Sub\n")
    assert_names_file(exc, "empty.md")


# -- HTML --------------------------------------------------------------------------------------
HTML = b"""<!DOCTYPE html>
<html><head><title>Page title</title><style>body { color: red }</style>
<script>var secretToken = 1;</script></head>
<body>
<noscript>Enable JavaScript</noscript>
<p>Lead paragraph.</p>
<h1>Guide</h1>
<p>First<br>line two</p><p>Second paragraph</p>
<ul><li>one</li><li>two</li></ul>
<h2>Details</h2>
<table><tr><th>Key</th><th>Value</th></tr><tr><td>a</td><td>1</td></tr></table>
<script>document.write("injected")</script>
<p>Escaped: &lt;script&gt;alert(1)&lt;/script&gt; stays text.</p>
<!-- a comment -->
<template><p>template text</p></template>
<h1>Other</h1><div><div>Nested <b>bold</b> words</div></div>
</body></html>"""


def test_html_headings_blocks_and_no_markup():
    doc = parse_document("page.html", HTML)
    assert doc.kind == "html"
    assert [s.heading for s in doc.sections] == [None, "Guide", "Guide > Details", "Other"]
    lead, guide, details, other = (s.text for s in doc.sections)
    assert lead == "Lead paragraph."
    assert guide == "First\nline two\n\nSecond paragraph\n\none\ntwo"
    assert details == "Key | Value\na | 1\n\nEscaped: <script>alert(1)</script> stays text."
    assert other == "Nested bold words"
    everything = "\n".join(s.text for s in doc.sections)
    for hidden in ("secretToken", "color: red", "injected", "Enable JavaScript", "Page title",
                   "a comment", "template text", "<p", "<h1", "<td", "DOCTYPE"):
        assert hidden not in everything


def test_htm_suffix_and_script_only_page():
    assert parse_document("x.HTM", b"<p>hi</p>").sections == [Section("hi")]
    with pytest.raises(NoExtractableText) as exc:
        parse_document("app.html", b"<html><script>main()</script><style>p{}</style></html>")
    assert_names_file(exc, "app.html")


# -- encodings ---------------------------------------------------------------------------------
ACCENTED = "Café crème brûlée, naïve façade: résumé für Straße.\n\nDeuxième paragraphe à l'hôtel."


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "utf-16-le", "utf-16-be"]
)
def test_text_encodings(encoding):
    doc = parse_document("notes.txt", ACCENTED.encode(encoding))
    assert doc.sections == [Section(ACCENTED)]


def test_cp1252_smart_quotes():
    text = "\u201cQuoted\u201d \u2013 with dashes \u2014 and \u20ac5 in caf\u00e9s."
    assert parse_document("q.txt", text.encode("cp1252")).sections[0].text == text


def test_text_whitespace_normalised_paragraphs_kept():
    raw = b"First   line\t\twith  gaps   \r\nsecond line\r\n\r\n\r\n\r\n  indented\x0c\n\n\nlast"
    text = parse_document("w.txt", raw).sections[0].text
    assert text == "First line with gaps\nsecond line\n\n  indented\n\nlast"


# -- empty, binary, unsupported ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.docx", "empty.json"])
def test_zero_bytes(name):
    with pytest.raises(EmptyFile) as exc:
        parse_document(name, b"")
    assert_names_file(exc, name)
    assert "0 bytes" in str(exc.value)


@pytest.mark.parametrize("data", [b"   \n\n\t  \r\n", "\ufeff \n".encode(), " \n".encode("utf-16")])
def test_whitespace_only(data):
    with pytest.raises(EmptyFile) as exc:
        parse_document("blank.md", data)
    assert_names_file(exc, "blank.md")
    assert "contains no text" in str(exc.value)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(3).randbytes(3000),
                     id="png"),
        pytest.param(random.Random(4).randbytes(3000).replace(b"\x00", b"\x01"), id="no-nul"),
        pytest.param(bytes(range(1, 32)) * 100, id="controls"),
    ],
)
def test_binary_renamed_as_text(data):
    with pytest.raises(CorruptFile) as exc:
        parse_document("photo.txt", data)
    assert_names_file(exc, "photo.txt")
    assert "binary" in str(exc.value)


@pytest.mark.parametrize(("name", "shown"), [("setup.exe", "'.exe'"), ("Makefile", "no extension")])
def test_unsupported_type(name, shown):
    with pytest.raises(UnsupportedFile) as exc:
        parse_document(name, b"data")
    assert_names_file(exc, name)
    assert shown in str(exc.value)
    assert ".csv, .docx, .htm, .html, .json, .markdown, .md, .pdf, .txt" in str(exc.value)


# -- JSON and CSV ------------------------------------------------------------------------------
def test_json_pretty_printed_keeping_unicode():
    data = json.dumps({"name": "Zoë", "tags": ["a", "b"], "n": 1}, separators=(",", ":"))
    doc = parse_document("data.json", data.encode())
    assert doc.kind == "json"
    assert doc.sections == [
        Section('{\n  "name": "Zoë",\n  "tags": [\n    "a",\n    "b"\n  ],\n  "n": 1\n}')
    ]


def test_json_invalid():
    with pytest.raises(CorruptFile) as exc:
        parse_document("bad.json", b'{\n  "a": 1,\n  "b": \n}')
    assert_names_file(exc, "bad.json")
    assert "is not valid JSON (line 4 column 1" in str(exc.value)


def test_csv_rows_as_lines():
    data = "name,city\nAda,London\nJosé,São Paulo\n".encode("cp1252")
    doc = parse_document("people.csv", data)
    assert doc.kind == "csv"
    assert doc.sections == [Section("name,city\nAda,London\nJosé,São Paulo")]


# -- what a renamed file really is, and PDF lines ----------------------------------------------
@pytest.mark.parametrize("name, data, what", [
    ("setup.pdf", b"\x7fELF\x02\x01\x01\x00" + bytes(4000), "a Linux program (ELF)"),
    ("setup.pdf", b"MZ\x90\x00\x03" + bytes(4000), "a Windows program (EXE or DLL)"),
    ("photo.pdf", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300), "a PNG image"),
    ("report.pdf", make_docx(), "a Word document (.docx)"),
    ("report.docx", make_pdf(["Some text."]), "a PDF document"),
    ("tool.txt", b"\x7fELF\x02\x01\x01\x00" + bytes(4000), "a Linux program (ELF)"),
])
def test_a_renamed_file_is_named_for_what_it_is(name, data, what):
    """A program renamed .pdf was "not a readable PDF (Stream has ended unexpectedly)"."""
    with pytest.raises(CorruptFile) as exc:
        parse_document(name, data)
    assert f"its bytes are {what}" in str(exc.value) and "renamed" in str(exc.value)
    assert "Stream has ended" not in str(exc.value)


def test_pdf_lines_wrapped_by_the_layout_are_joined():
    # Each paragraph's last line is short; one that fills its line would run on into the
    # next paragraph, as pypdf gives no sign of the gap between them.
    first = "The quick brown fox jumps over the lazy dog near the riverbank while the farmers watch. " * 4
    second = "Second paragraph starts here and it continues with more words to wrap around the line. " * 3
    doc = parse_document("p.pdf", make_pdf([first + "\n\n" + second + "\n\nShort line.\n- an item\nEnd."]))
    lines = doc.sections[0].text.split("\n")
    assert lines == [first.strip(), second.strip(), "Short line.", "- an item", "End."]
