"""Hostile uploads within the size limit: each bomb is refused (or, for a base64 blob, taken
in) within a few seconds and well under 1 GB, with a message naming the budget.

Time and peak memory are measured in a fresh Python process that parses the file, and its
own children (the parse worker): ``ru_maxrss`` of the process and of its reaped children.
The bounds are generous (the machine is shared) and set against the same measurement for a
small ordinary file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import docx
import pytest

from assistant.config import ParseLimits
from assistant.errors import CorruptFile, OverBudget
from assistant.documents.parse_worker import parse_isolated
from assistant.documents.parsing import parse_document

ROOT = Path(__file__).resolve().parent.parent
#: Refusals are expected within a few seconds; this leaves room for a loaded machine.
MAX_SECONDS = 30.0
MAX_PEAK_MB = 600.0


# -- bombs ---------------------------------------------------------------------------------------
def million_columns_csv() -> bytes:
    """~9.9 MB: a header row of a million columns, and one data row."""
    header = ",".join(f"c{i:06d}" for i in range(1_000_000))
    return (header + "\n" + "1," * 10 + "1\n").encode()


def base64_blob() -> bytes:
    """4 MB of base64 on one line: no space, no sentence end."""
    return base64.b64encode(random.Random(7).randbytes(3_000_000))


def docx_bomb(unpacked: int = 2 << 30) -> bytes:
    """A valid .docx (~2 MB) whose word/document.xml unpacks to ``unpacked`` bytes.

    The deflate stream is made once for a 1 MiB slice and repeated: after a full flush the
    compressor starts afresh, so every repetition of the same slice compresses to the same
    bytes. The zip is written by hand around it (zipfile cannot take precompressed data)."""
    template = io.BytesIO()
    docx.Document().save(template)
    parts = {i.filename: zipfile.ZipFile(template).read(i) for i in zipfile.ZipFile(template).infolist()}
    # One paragraph with one enormous run of text: a single repeated byte compresses best.
    head = parts["word/document.xml"].split(b"<w:body>")[0] + b"<w:body><w:p><w:r><w:t>"
    tail = b"</w:t></w:r></w:p></w:body></w:document>"
    slice_ = b"a" * (1 << 20)
    repeats = (unpacked - len(head) - len(tail)) // len(slice_)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(slice_) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(slice_) + c.flush(zlib.Z_FULL_FLUSH) == block
    stream = first + block * repeats + c.compress(tail) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(slice_, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + repeats * len(slice_) + len(tail)
    entries = []
    for name, raw in parts.items():
        if name == "word/document.xml":
            entries.append((name, stream, crc, size))
        else:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            entries.append((name, c.compress(raw) + c.flush(), zlib.crc32(raw), len(raw)))
    return _zip(entries)


def _zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, crc, size in entries:
        offset = out.tell()
        fields = (20, 0, 8, 0, 0x21, crc, len(data), size, len(name.encode()), 0)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0,
                                  offset) + name.encode())
    start, cd = out.tell(), central.getvalue()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                               len(cd), start, 0))
    return out.getvalue()


def test_the_docx_bomb_is_what_it_claims():
    data = docx_bomb(64 << 20)  # the same construction, small enough to unpack here
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo("word/document.xml")
    assert info.file_size > 60 << 20 and len(data) < 1 << 20
    assert archive.testzip() is None  # every checksum holds: a real zip, not a broken one
    big = docx_bomb()
    assert len(big) < 3 << 20
    unpacked = zipfile.ZipFile(io.BytesIO(big)).getinfo("word/document.xml").file_size
    assert unpacked > (2 << 30) - (2 << 20)


# -- measured in a fresh process -------------------------------------------------------------
PROBE = textwrap.dedent("""
    import json, resource, sys, time
    from assistant.config import ParseLimits
    from assistant.errors import DocumentError
    from assistant.documents.parse_worker import _pool, parse_isolated
    path, name, isolate = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    data = open(path, "rb").read()
    limits = ParseLimits(isolate=isolate)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        doc = parse_isolated(name, data, limits)
        error, chars = None, sum(len(s.text) for s in doc.sections)
    except DocumentError as err:
        error, chars = str(err), 0
    seconds = time.perf_counter() - started
    _pool.close()
    # VmHWM, not ru_maxrss: Linux carries a process's ru_maxrss over from the one that
    # forked it (the test runner, with its models) across exec. A child forked from here
    # starts at most at our size, so its ru_maxrss bounds its own peak.
    own = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM:"))
    peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "error": error,
                      "chars": chars}))
""")


def probe(tmp_path: Path, name: str, data: bytes, isolate: bool = True) -> dict:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PROBE, str(path), name, "1" if isolate else "0"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    """An ordinary small file, measured the same way."""
    return probe(tmp_path_factory.mktemp("base"), "notes.csv", b"a,b,c\n1,2,3\n" * 100)


@pytest.mark.parametrize("isolate", [True, False], ids=["child", "in-process"])
@pytest.mark.parametrize("name, build, budget", [
    ("wide.csv", million_columns_csv, "MAX_COLUMNS"),
    ("bomb.docx", docx_bomb, "MAX_DECOMPRESSED_MB"),
])
def test_bombs_are_refused_quickly_and_in_little_memory(tmp_path, baseline, name, build,
                                                        budget, isolate):
    result = probe(tmp_path, name, build(), isolate)
    assert result["error"] is not None and f"ASSISTANT_RETRIEVAL__PARSE__{budget}" in result["error"]
    assert result["error"].startswith(f"{name}: refused: ")
    assert result["seconds"] < MAX_SECONDS
    assert result["peak_mb"] < MAX_PEAK_MB
    # Against an ordinary file read the same way: the bomb costs a few times as much at most.
    assert result["peak_mb"] < 5 * baseline["peak_mb"], (result, baseline)


def test_a_base64_blob_is_refused_quickly_as_data(tmp_path, baseline):
    """It used to take over 200 s: the tokenizer reads random letters at ~90 KB/s and the
    blob was tokenized several times over, then embedded as thousands of chunks of noise."""
    result = probe(tmp_path, "blob.txt", base64_blob())
    assert result["error"] == (
        "blob.txt: holds encoded data, not text (a run of 4,000,000 letters and digits without "
        "a space: base64, hex or similar); decode it and upload the result")
    assert result["seconds"] < MAX_SECONDS
    assert result["peak_mb"] < MAX_PEAK_MB
    assert result["peak_mb"] < 5 * baseline["peak_mb"], (result, baseline)


def test_encoded_data_inside_text_is_left_out():
    blob = base64_blob()[:50_000]
    doc = parse_document("n.md", b"# Pic\n\nSee ![x](data:image/png;base64," + blob + b") here.")
    assert doc.sections[0].text == "See ![x](data:image/png;base64,[encoded data left out]) here."
    # Long runs that are not data stay: numbers in a wide CSV row, a long word.
    row = ",".join(str(i * 1.5) for i in range(400))
    assert parse_document("w.csv", row.encode()).sections[0].text == row
    assert "x" * 999 in parse_document("w.txt", b"x" * 999).sections[0].text


# -- each budget, in-process and through the child -------------------------------------------
def _limits(**kw) -> ParseLimits:
    return ParseLimits(isolate=False, **kw)


def test_text_budget():
    with pytest.raises(OverBudget, match="MAX_TEXT_CHARS") as err:
        parse_document("long.txt", b"word " * 1000, _limits(max_text_chars=4000))
    assert "4,000 characters" in str(err.value) and err.value.budget == "max_text_chars"
    assert parse_document("ok.txt", b"word " * 100, _limits(max_text_chars=4000))


def test_table_budgets():
    with pytest.raises(OverBudget, match="a table row has 11 columns"):
        parse_document("t.csv", b"a;b;c\n" + b"1;" * 10 + b"1\n", _limits(max_columns=10))
    with pytest.raises(OverBudget, match="MAX_CELLS"):
        parse_document("t.csv", b"a,b\n" * 100, _limits(max_cells=150))
    document = docx.Document()
    document.add_table(rows=2, cols=12)
    out = io.BytesIO()
    document.save(out)
    with pytest.raises(OverBudget, match="a table row has 12 columns"):
        parse_document("t.docx", out.getvalue(), _limits(max_columns=10))


def test_markup_and_nesting_budgets():
    with pytest.raises(OverBudget, match="HTML elements"):
        parse_document("p.html", b"<b>x</b>" * 200, _limits(max_elements=100))
    with pytest.raises(OverBudget, match="JSON values"):
        parse_document("d.json", b"[" + b"1," * 200 + b"1]", _limits(max_elements=100))
    with pytest.raises(OverBudget, match="nested 31 levels deep"):
        parse_document("d.json", b"[" * 31 + b"]" * 31, _limits(max_nesting=30))
    with pytest.raises(OverBudget, match="MAX_NESTING"):
        parse_document("d.json", b"[" * 100_000 + b"]" * 100_000, _limits())
    assert parse_document("d.json", b"[" * 30 + b"1" + b"]" * 30, _limits(max_nesting=30))
    document = docx.Document()
    for _ in range(50):
        document.add_paragraph("x")
    out = io.BytesIO()
    document.save(out)
    with pytest.raises(OverBudget, match="XML elements"):
        parse_document("many.docx", out.getvalue(), _limits(max_elements=100))


def test_time_budget(monkeypatch):
    import assistant.documents.parsing as parsing

    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(parsing, "_clock", lambda: next(clock))
    with pytest.raises(OverBudget, match="longer than 30 s"):
        parse_document("slow.md", b"line\n" * 10_000, _limits(max_seconds=30))


def test_the_child_reports_budgets_errors_and_results_alike():
    limits = ParseLimits(max_columns=10)
    with pytest.raises(OverBudget, match="a table row has 11 columns") as err:
        parse_isolated("t.csv", b"1," * 10 + b"1\n", limits)
    assert err.value.filename == "t.csv" and err.value.budget == "max_columns"
    with pytest.raises(CorruptFile, match="not a valid .docx"):
        parse_isolated("x.docx", b"PK\x03\x04 not really", limits)
    data = "# Tête\n\nbody 😀 text\n\n## Sub\n\nmore".encode()
    doc = parse_isolated("../dir/é.md", data, limits)
    assert doc.name == "é.md" and doc.sections[0].heading == "Tête"
    assert doc == parse_document("../dir/é.md", data, limits)


def test_a_crashing_or_greedy_parser_ends_only_the_child(monkeypatch):
    """What the budgets cannot foresee: the child's own limits stop it, the app carries on."""
    from assistant.documents import parse_worker

    greedy = ParseLimits(max_memory_mb=256)
    # The child allocates far past its address-space limit: refused as over the memory budget.
    monkeypatch.setattr(parse_worker, "_start", lambda errors: subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.buffer.readline(); "
         "import resource; resource.setrlimit(resource.RLIMIT_AS, (256 << 20, -1)); "
         "b = bytearray(1 << 30)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, bufsize=0))
    parse_worker._pool.close()
    with pytest.raises(OverBudget, match="MAX_MEMORY_MB"):
        parse_isolated("big.txt", b"x", greedy)
    # A child that dies on a signal: a clean refusal, not a crash of ours.
    monkeypatch.setattr(parse_worker, "_start", lambda errors: subprocess.Popen(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, bufsize=0))
    parse_worker._pool.close()
    with pytest.raises(CorruptFile, match="the parser stopped"):
        parse_isolated("crash.pdf", b"%PDF-1.4", ParseLimits())
    # One that hangs: killed at the time budget.
    monkeypatch.setattr(parse_worker, "GRACE_S", 0.5)
    monkeypatch.setattr(parse_worker, "_start", lambda errors: subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, bufsize=0))
    parse_worker._pool.close()
    with pytest.raises(OverBudget, match="MAX_SECONDS"):
        parse_isolated("slow.pdf", b"%PDF-1.4", ParseLimits(max_seconds=1))
    parse_worker._pool.close()



def test_the_child_gets_none_of_the_apps_secrets(monkeypatch):
    from assistant.documents import parse_worker

    monkeypatch.setenv("ASSISTANT_PASSWORD", "the admin's password")
    seen: dict[str, str] = {}
    popen = subprocess.Popen

    def recording_popen(args, **kwargs):
        seen.update(kwargs["env"])
        return popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(parse_worker.subprocess, "Popen", recording_popen)
    parse_worker._start(None).wait()
    assert seen and not [k for k in seen if k.startswith("ASSISTANT_")]
    assert str(ROOT) in seen["PYTHONPATH"]
