"""Import public preference data as conversations with a choice, so that it exports (and
trains) exactly like the feedback users give in the app.

    assistant data import hh-rlhf path/to/hh_rlhf_harmless_test.jsonl

Each hh-rlhf line ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``
becomes one conversation (``source="hh-rlhf:<file>:<sha256 of the line, 16 hex>"``): the
shared turns, the final question, two answers to it and a :class:`Choice` of the chosen
one. A line whose hash is already stored is skipped (counted as a duplicate), so importing
a file again adds nothing. Malformed lines are reported with their line number and reason;
the rest goes in, one transaction per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from alignment.errors import ImportFileError
from assistant.chat.prompting import Turn
from assistant.storage.db import Database
from assistant.storage.examples import ChosenThread, ExampleStore, Provenance

log = logging.getLogger(__name__)

HH_SOURCE = "hh-rlhf"
HH_MODEL_ID = "imported:hh-rlhf"
HH_MODEL_VERSION = "hh-rlhf"
BATCH_SIZE = 200
PROGRESS_MIN_LINES = 300

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


class MalformedPair(ValueError):
    """One line that cannot become a pair; the message is the reason."""


@dataclass(frozen=True)
class Malformed:
    line: int  # 1-based, as editors show it
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    path: Path
    pairs_in: int = 0  # non-blank lines
    imported: int = 0
    duplicates: int = 0  # already stored (or repeated within the file)
    malformed: list[Malformed] = field(default_factory=list)


@dataclass(frozen=True)
class HHPair:
    """A parsed line: the shared turns (ending on the question) and the two last answers."""

    prompt: tuple[Turn, ...]
    chosen: str
    rejected: str


def parse_dialogue(text: str) -> list[Turn]:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` -> turns. Consecutive turns of one role
    (a few hh-rlhf dialogues have two Assistant turns in a row) are joined into one, so
    that the turns alternate as a chat does."""
    parts = _TURN.split(text)
    if len(parts) < 3:
        raise MalformedPair("no 'Human:' / 'Assistant:' turns")
    if parts[0].strip():
        raise MalformedPair("text before the first 'Human:' turn")
    turns: list[Turn] = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        role, content = _ROLES[role], content.strip()
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, f"{turns[-1].content}\n\n{content}".strip())
        else:
            turns.append(Turn(role, content))
    return turns


def parse_hh_line(line: str) -> HHPair:
    """One JSONL line -> :class:`HHPair`, or :class:`MalformedPair` saying why not."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise MalformedPair(f"not JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:  # e.g. a 5,000-digit number, deep nesting
        raise MalformedPair(f"not JSON ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(obj, dict):
        raise MalformedPair("not a JSON object")
    missing = [k for k in ("chosen", "rejected") if not isinstance(obj.get(k), str)]
    if missing:
        raise MalformedPair(
            f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} (text expected)")
    if obj["chosen"] == obj["rejected"]:
        raise MalformedPair("chosen and rejected are identical")
    chosen, rejected = parse_dialogue(obj["chosen"]), parse_dialogue(obj["rejected"])
    if chosen[-1].role != "assistant" or rejected[-1].role != "assistant":
        raise MalformedPair("the dialogue does not end with an 'Assistant:' answer")
    prompt = tuple(chosen[:-1])
    if not prompt or prompt[-1].role != "user":
        raise MalformedPair("no 'Human:' question before the final answer")
    if tuple(rejected[:-1]) != prompt:
        raise MalformedPair("chosen and rejected do not share the turns before the final answer")
    if not chosen[-1].content:
        raise MalformedPair("the chosen answer is empty")
    if not rejected[-1].content:
        raise MalformedPair("the rejected answer is empty")
    if chosen[-1].content == rejected[-1].content:
        raise MalformedPair("chosen and rejected answers are identical")
    return HHPair(prompt, chosen[-1].content, rejected[-1].content)


def line_hash(line: str) -> str:
    return hashlib.sha256(line.strip().encode("utf-8")).hexdigest()[:16]


def _stored_hashes(db: Database) -> set[str]:
    return {src.rsplit(":", 1)[-1] for src in ExampleStore(db).sources(f"{HH_SOURCE}:")}


def _read_lines(path: Path) -> list[bytes]:
    try:
        return path.read_bytes().splitlines()
    except FileNotFoundError:
        raise ImportFileError(path, "no such file") from None
    except IsADirectoryError:
        raise ImportFileError(path, "it is a folder; give the .jsonl file") from None
    except OSError as err:
        raise ImportFileError(path, err.strerror or str(err)) from None


def import_hh_rlhf(db: Database, path: str | Path, batch_size: int = BATCH_SIZE) -> ImportReport:
    """Import an hh-rlhf JSONL file into ``db``; see the module docstring."""
    path = Path(path)
    raw_lines = _read_lines(path)
    report = ImportReport(path)
    seen = _stored_hashes(db)
    # Conversation.source holds 300 characters: "hh-rlhf:" + name + ":" + 16 hex.
    name = path.name[: 300 - len(HH_SOURCE) - 18]
    pending: list[tuple[str, HHPair]] = []
    lines: Iterable[tuple[int, bytes]] = enumerate(raw_lines, start=1)
    bar = tqdm(
        lines, total=len(raw_lines), desc=f"Importing {path.name}", unit="line",
        disable=len(raw_lines) < PROGRESS_MIN_LINES,
    )
    for number, raw in bar:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            report.pairs_in += 1
            report.malformed.append(Malformed(number, "not UTF-8 text"))
            continue
        if not line.strip():
            continue
        report.pairs_in += 1
        digest = line_hash(line)
        if digest in seen:
            report.duplicates += 1
            continue
        try:
            pair = parse_hh_line(line)
        except MalformedPair as err:
            report.malformed.append(Malformed(number, str(err)))
            continue
        seen.add(digest)
        pending.append((f"{HH_SOURCE}:{name}:{digest}", pair))
        if len(pending) >= batch_size:
            report.imported += _write_batch(db, pending)
            pending = []
    if pending:
        report.imported += _write_batch(db, pending)
    bar.close()
    log.info(
        "Imported %d pairs from %s (%d duplicates, %d malformed)",
        report.imported, path, report.duplicates, len(report.malformed),
    )
    return report


def _write_batch(db: Database, batch: list[tuple[str, HHPair]]) -> int:
    """One transaction: every conversation of the batch, or none of them. Every answer
    carries the provenance of an import (no model of ours produced it)."""
    provenance = Provenance(HH_MODEL_ID, HH_MODEL_VERSION, {}, prompt_tokens=0,
                            completion_tokens=0, latency_ms=0.0)
    return ExampleStore(db).add_threads([
        ChosenThread(source, tuple((t.role, t.content) for t in pair.prompt), pair.chosen,
                     provenance, rejected=pair.rejected)
        for source, pair in batch
    ])
