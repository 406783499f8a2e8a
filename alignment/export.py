"""Turn the feedback in the database into TRL datasets (conversational format).

    assistant data export --kind preference --out out/pref            # JSONL
    assistant data export --kind kto --format hf --out out/kto        # datasets folder

The export is a pure function of the database: :func:`load_feedback` (one query per table)
then :func:`build_export` (no I/O), so the same database always gives the same rows and the
same train/test split. :func:`export` does both; :func:`write_export` writes the result.

Kinds (rows are exactly what TRL's trainers read):

* ``preference`` ``{"prompt": [...], "chosen": [assistant], "rejected": [assistant]}`` for
  DPOTrainer / RewardTrainer, from: a choice (chosen answer vs each other alternative of the
  question), an edit (edited text vs the original), thumbs on alternatives of one question
  (each 👍 answer vs each 👎 one), and imported pairs (stored as choices).
* ``kto`` ``{"prompt", "completion": [assistant], "label": bool}`` for KTOTrainer, from the
  newest thumbs rating, chosen (True) / other alternatives (False), edited text (True) /
  original (False).
* ``sft`` ``{"messages": prompt + [assistant]}`` for SFTTrainer, one row per answer that was
  edited (the edited text), chosen or rated 👍 (and not rated 👎 now).

The prompt is what the answer was given: its system prompt (stored in its params) plus
:data:`~assistant.chat.prompting.SOURCES_INSTRUCTION` when it had sources, the thread shown
before the question as it stood when the answer was made (the alternative shown then, edits
made before it, minus the turns trimmed to fit the context window), and the question
wrapped by :func:`~assistant.chat.prompting.with_sources` with the sources snapshotted with it.

Over 500 lines: three kinds built from the same snapshot and the same rules (which answer
a rating or a choice is about, the prompt as it stood, the split by conversation); the
reads are in storage (:mod:`assistant.storage.snapshot`), the files written here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from alignment.errors import ExportPathError, NoTrainingData
from alignment.pii import mask_value
from assistant import atomic
from assistant.engines.messages import Messages
from assistant.chat.prompting import Turn, build_messages
from assistant.storage.conversations import thread_key
from assistant.storage.db import Database
from assistant.storage.origins import ORIGIN_FILTERS, is_grounded, matches, origin_of
from assistant.storage.snapshot import FeedbackSnapshot, Rating, StoredTurn, feedback_snapshot

log = logging.getLogger(__name__)

Kind = Literal["preference", "kto", "sft"]
SourceFilter = Literal["chats", "imports", "all"]
Format = Literal["jsonl", "hf"]
KINDS: tuple[str, ...] = ("preference", "kto", "sft")
SOURCE_FILTERS: tuple[str, ...] = ("chats", "imports", "all")
FORMATS: tuple[str, ...] = ("jsonl", "hf")
SPLITS = ("train", "test")
MANIFEST = "manifest.json"


# -- options and results ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExportOptions:
    test_fraction: float = 0.1
    seed: int = 0
    #: Answers created at or after ``since`` and before ``until`` (aware datetimes; naive
    #: ones are taken as UTC). A row passes when every answer it is made of does.
    since: datetime | None = None
    until: datetime | None = None
    #: Only answers of these model versions (every answer of a row must match).
    model_versions: tuple[str, ...] = ()
    #: Only rows with an answer whose newest rating carries any of these tags.
    tags: tuple[str, ...] = ()
    #: ``chats`` (conversations held in the app), ``imports`` (e.g. hh-rlhf) or ``all``.
    source: SourceFilter = "all"
    #: ``all`` or one origin: ``feedback`` (chats), ``imported`` (hh-rlhf, SQuAD) or
    #: ``synthetic`` (examples made from the library) (:mod:`assistant.storage.origins`).
    origin: str = "all"
    #: Only grounded rows: from a grounded import (SQuAD, synthetic) or answers shown sources.
    grounded: bool = False
    mask_pii: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), not {self.test_fraction}")
        if self.source not in SOURCE_FILTERS:
            raise ValueError(f"source must be one of {', '.join(SOURCE_FILTERS)}, not {self.source!r}")
        if self.origin not in ORIGIN_FILTERS:
            raise ValueError(f"origin must be one of {', '.join(ORIGIN_FILTERS)}, not {self.origin!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))


@dataclass
class ExportReport:
    kind: str
    #: Rows (pairs for ``preference``) built from the feedback.
    rows_in: int = 0
    #: Left out before filtering: chosen and rejected identical, or nothing to learn (empty).
    skipped_identical: int = 0
    skipped_empty: int = 0
    filtered_out: int = 0
    duplicates_dropped: int = 0
    rows_out: int = 0
    train: int = 0
    test: int = 0
    #: Rows out by the feedback they came from: choice, edit, thumbs.
    by_signal: dict[str, int] = field(default_factory=dict)
    #: Rows out from imported conversations (e.g. hh-rlhf).
    imported: int = 0
    #: Rows out by origin: feedback, imported, synthetic.
    by_origin: dict[str, int] = field(default_factory=dict)
    #: Conversations behind the train and the test rows.
    train_conversations: int = 0
    test_conversations: int = 0
    #: Strings masked by ``mask_pii``: {"email": n, "phone": n}.
    masked: dict[str, int] = field(default_factory=dict)


@dataclass
class ExportResult:
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    report: ExportReport

    def splits(self) -> dict[str, list[dict[str, Any]]]:
        return {"train": self.train, "test": self.test}


# -- the query -------------------------------------------------------------------------------
def load_feedback(db: Database) -> FeedbackSnapshot:
    """Read the conversations, messages and feedback the export is built from
    (:func:`assistant.storage.snapshot.feedback_snapshot`)."""
    return feedback_snapshot(db)


# -- the transform ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A row before filtering, with what the filters and the split look at."""

    row: dict[str, Any]
    conversation_id: int
    answers: tuple[StoredTurn, ...]
    signal: str  # "choice" | "edit" | "thumbs"
    #: Why it is left out before filtering: "identical", "empty" or None.
    skip: str | None = None


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


class _Threads:
    """Questions, alternatives and prompts of a snapshot."""

    def __init__(self, snap: FeedbackSnapshot) -> None:
        self.snap = snap
        self.by_id: dict[int, StoredTurn] = {}
        #: answer id -> question id (reply_to_id; for answers stored without one, the user
        #: message just before them, as the migration that added reply_to_id does)
        self.question_of: dict[int, int] = {}
        #: question id -> its answers, oldest first
        self.alternatives: dict[int, list[StoredTurn]] = {}
        for msgs in snap.messages.values():
            last_user = None
            for m in msgs:
                self.by_id[m.id] = m
                if m.role == "user":
                    last_user = m.id
                    continue
                q = m.reply_to_id or last_user
                if q is not None:
                    self.question_of[m.id] = q
                    self.alternatives.setdefault(q, []).append(m)
        self._prompts: dict[int, Messages] = {}

    def answers(self) -> Iterable[StoredTurn]:
        """Every answer to a question, in id order."""
        return (self.by_id[i] for i in sorted(self.question_of))

    def text_at(self, answer: StoredTurn, at: datetime) -> str:
        """The answer's text as shown at ``at``: its newest edit made by then, if any."""
        shown = answer.content
        for e in self.snap.edits.get(answer.id, ()):
            if e.created_at <= at:
                shown = e.text
        return shown

    def edited(self, answer: StoredTurn) -> str | None:
        edits = self.snap.edits.get(answer.id)
        return edits[-1].text if edits else None

    def shown_alternative(self, question_id: int, at: datetime) -> StoredTurn | None:
        """The answer to ``question_id`` that was shown at ``at``: the one shown now if it
        already existed then, else the newest that did (a new alternative is shown when
        made). Only choices are logged with a time, so this is the best the data allows."""
        existing = [a for a in self.alternatives.get(question_id, ()) if a.created_at <= at]
        if not existing:
            return None
        active = [a for a in existing if a.active]
        return active[0] if active else existing[-1]

    def _shown_before(self, question: StoredTurn, at: datetime) -> list[Turn]:
        """The thread ChatService gave the model before ``question`` at time ``at``: the
        messages before it in thread order (``thread_key``, as ConversationStore.messages /
        history_before hand them to ChatService) that were shown then, answers in their
        text as edited by then."""
        shown: list[Turn] = []
        before = thread_key(question.id, question.role, question.reply_to_id)
        thread = sorted(self.snap.messages[question.conversation_id],
                        key=lambda m: thread_key(m.id, m.role, self.question_of.get(m.id)))
        for m in thread:
            if thread_key(m.id, m.role, self.question_of.get(m.id)) >= before:
                break
            if m.role == "user":
                shown.append(Turn("user", m.content))
                continue
            q = self.question_of.get(m.id)
            visible = (m.active and m.created_at <= at) if q is None else (
                self.shown_alternative(q, at) is m)
            if visible:
                shown.append(Turn("assistant", self.text_at(m, at)))
        return shown

    def prompt(self, answer: StoredTurn) -> Messages:
        """The messages ``answer`` was generated from (a fresh list: rows own their data)."""
        cached = self._prompts.get(answer.id)
        if cached is not None:
            return [dict(m) for m in cached]
        question = self.by_id[self.question_of[answer.id]]
        history = self._shown_before(question, answer.created_at)[answer.trimmed_turns:]
        sources = self.snap.sources.get(answer.id, ())
        system = (answer.params or {}).get("system_prompt") or ""
        prompt = build_messages(system, history, question.content, sources)
        self._prompts[answer.id] = prompt
        return [dict(m) for m in prompt]


def _pair(t: _Threads, signal: str, chosen: StoredTurn, chosen_text: str,
          rejected: StoredTurn, rejected_text: str) -> Candidate:
    # A pair is trained under the chosen answer's prompt: the alternatives of a question
    # normally saw the same one (unless the documents or system prompt changed in between).
    skip = ("empty" if not chosen_text.strip()
            else "identical" if chosen_text.strip() == rejected_text.strip() else None)
    row = {"prompt": t.prompt(chosen), "chosen": _assistant(chosen_text),
           "rejected": _assistant(rejected_text)}
    answers = (chosen,) if chosen is rejected else (chosen, rejected)
    return Candidate(row, chosen.conversation_id, answers, signal, skip)


def _preference(t: _Threads) -> list[Candidate]:
    out: list[Candidate] = []
    for qid, chosen_id in sorted(t.snap.choices.items()):
        chosen = t.by_id.get(chosen_id)
        if chosen is None or t.question_of.get(chosen_id) != qid:
            continue
        for other in t.alternatives[qid]:
            if other.id != chosen_id:
                out.append(_pair(t, "choice", chosen, chosen.content, other, other.content))
    for answer in t.answers():
        edited = t.edited(answer)
        if edited is not None:
            out.append(_pair(t, "edit", answer, edited, answer, answer.content))
    for _qid, alts in sorted(t.alternatives.items()):
        ups = [a for a in alts if _rating(t, a) == 1]
        downs = [a for a in alts if _rating(t, a) == -1]
        out.extend(_pair(t, "thumbs", up, up.content, down, down.content)
                   for up in ups for down in downs)
    return out


def _rating(t: _Threads, answer: StoredTurn) -> int | None:
    r = t.snap.ratings.get(answer.id)
    return r.rating if r else None


def _kto_row(t: _Threads, signal: str, answer: StoredTurn, text: str, label: bool) -> Candidate:
    row = {"prompt": t.prompt(answer), "completion": _assistant(text), "label": label}
    skip = "empty" if label and not text.strip() else None
    return Candidate(row, answer.conversation_id, (answer,), signal, skip)


def _kto(t: _Threads) -> list[Candidate]:
    out: list[Candidate] = []
    for answer in t.answers():
        rating = _rating(t, answer)
        if rating is not None:
            out.append(_kto_row(t, "thumbs", answer, answer.content, rating == 1))
    for qid, chosen_id in sorted(t.snap.choices.items()):
        if t.question_of.get(chosen_id) != qid:
            continue
        for alt in t.alternatives[qid]:
            out.append(_kto_row(t, "choice", alt, alt.content, alt.id == chosen_id))
    for answer in t.answers():
        edited = t.edited(answer)
        if edited is not None:
            out.append(_kto_row(t, "edit", answer, edited, True))
            out.append(_kto_row(t, "edit", answer, answer.content, False))
    return out


def _sft(t: _Threads) -> list[Candidate]:
    out: list[Candidate] = []
    for answer in t.answers():
        edited, rating = t.edited(answer), _rating(t, answer)
        if edited is not None:
            text, signal = edited, "edit"
        elif rating == -1:
            continue  # chosen among bad alternatives is still rated bad: nothing to imitate
        elif t.snap.choices.get(t.question_of[answer.id]) == answer.id:
            text, signal = answer.content, "choice"
        elif rating == 1:
            text, signal = answer.content, "thumbs"
        else:
            continue
        row = {"messages": [*t.prompt(answer), *_assistant(text)]}
        skip = "empty" if not text.strip() else None
        out.append(Candidate(row, answer.conversation_id, (answer,), signal, skip))
    return out


_BUILDERS = {"preference": _preference, "kto": _kto, "sft": _sft}


def _passes(c: Candidate, snap: FeedbackSnapshot, o: ExportOptions) -> bool:
    if o.source != "all":
        imported = snap.conversations.get(c.conversation_id) is not None
        if imported != (o.source == "imports"):
            return False
    source = snap.conversations.get(c.conversation_id)
    if not matches(source, o.origin):
        return False
    if o.grounded and not is_grounded(source) and not all(snap.sources.get(a.id) for a in c.answers):
        return False
    for a in c.answers:
        if o.since is not None and a.created_at < o.since:
            return False
        if o.until is not None and a.created_at >= o.until:
            return False
        if o.model_versions and a.model_version not in o.model_versions:
            return False
    if o.tags:
        wanted = {t.strip().lower() for t in o.tags}
        tags = {tag for a in c.answers for tag in (snap.ratings.get(a.id) or Rating(None, ())).tags}
        if not wanted & tags:
            return False
    return True


def split_of(conversation_id: int, seed: int, test_fraction: float) -> str:
    """``"test"`` or ``"train"``: a hash of the conversation id and the seed, so a
    conversation's rows always land together and in the same split."""
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def _content_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def build_export(snap: FeedbackSnapshot, kind: Kind, options: ExportOptions | None = None) -> ExportResult:
    """The rows of ``kind`` in ``snap``, filtered, masked, deduplicated and split."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    o = options or ExportOptions()
    report = ExportReport(kind)
    candidates = _BUILDERS[kind](_Threads(snap))
    report.rows_in = len(candidates)

    kept: list[Candidate] = []
    for c in candidates:
        if c.skip == "identical":
            report.skipped_identical += 1
        elif c.skip == "empty":
            report.skipped_empty += 1
        elif not _passes(c, snap, o):
            report.filtered_out += 1
        else:
            kept.append(c)

    masked: Counter = Counter()
    seen: set[str] = set()
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    conversations: dict[str, set[int]] = {"train": set(), "test": set()}
    by_signal: Counter = Counter()
    by_origin: Counter = Counter()
    for c in kept:
        row = mask_value(c.row, masked) if o.mask_pii else c.row
        key = _content_key(row)
        if key in seen:
            report.duplicates_dropped += 1
            continue
        seen.add(key)
        split = split_of(c.conversation_id, o.seed, o.test_fraction)
        splits[split].append(row)
        conversations[split].add(c.conversation_id)
        by_signal[c.signal] += 1
        by_origin[origin_of(snap.conversations.get(c.conversation_id))] += 1
        report.imported += snap.conversations.get(c.conversation_id) is not None

    report.train, report.test = len(splits["train"]), len(splits["test"])
    report.rows_out = report.train + report.test
    report.train_conversations = len(conversations["train"])
    report.test_conversations = len(conversations["test"])
    report.by_signal = dict(sorted(by_signal.items()))
    report.by_origin = dict(sorted(by_origin.items()))
    report.masked = {k: masked[k] for k in ("email", "phone")} if o.mask_pii else {}
    _check_not_empty(report, o)
    return ExportResult(splits["train"], splits["test"], report)


_WHAT_IS_NEEDED = {
    "preference": (
        "preference pairs come from choosing the best of several answers to a question "
        "(regenerate, then choose), editing an answer, or rating two answers to the same "
        "question 👍 and 👎"
    ),
    "kto": "KTO rows come from rating answers 👍 or 👎, choosing the best answer, or editing an answer",
    "sft": "SFT rows come from answers rated 👍, chosen as the best, or edited",
}


def _check_not_empty(report: ExportReport, o: ExportOptions) -> None:
    if report.rows_out and report.train:
        return
    if report.rows_out:  # every row fell into the test split
        raise NoTrainingData(
            f"All {report.rows_out} {report.kind} rows fell into the test split (they come from "
            f"{report.test_conversations} conversation(s)). Export with --test-fraction 0 or "
            "another --seed, or collect feedback in more conversations."
        )
    if report.rows_in == 0:
        raise NoTrainingData(
            f"No {report.kind} data in the database: {_WHAT_IS_NEEDED[report.kind]}. Give such "
            "feedback in the chat, or import public pairs with "
            "`assistant data import hh-rlhf FILE`."
        )
    if report.filtered_out:
        raise NoTrainingData(
            f"The filters left no {report.kind} rows: {report.filtered_out} of {report.rows_in} "
            f"were filtered out ({_describe_filters(o)}). Widen the filters."
        )
    raise NoTrainingData(
        f"No usable {report.kind} rows: all {report.rows_in} had identical chosen and rejected "
        f"answers ({report.skipped_identical}) or an empty answer ({report.skipped_empty}). "
        f"{_WHAT_IS_NEEDED[report.kind][0].upper()}{_WHAT_IS_NEEDED[report.kind][1:]}."
    )


def _describe_filters(o: ExportOptions) -> str:
    parts = []
    if o.since:
        parts.append(f"since {o.since:%Y-%m-%d %H:%M}")
    if o.until:
        parts.append(f"until {o.until:%Y-%m-%d %H:%M}")
    if o.model_versions:
        parts.append(f"model version {' or '.join(o.model_versions)}")
    if o.tags:
        parts.append(f"tag {' or '.join(o.tags)}")
    if o.source != "all":
        parts.append(f"source {o.source}")
    if o.origin != "all":
        parts.append(f"origin {o.origin}")
    if o.grounded:
        parts.append("grounded only")
    return ", ".join(parts) or "no filters"


def export(db: Database, kind: Kind = "preference", options: ExportOptions | None = None) -> ExportResult:
    """Build the ``kind`` dataset from ``db``. Raises :class:`NoTrainingData` when nothing
    is left to export, saying what feedback would produce rows."""
    return build_export(load_feedback(db), kind, options)


# -- writers ---------------------------------------------------------------------------------
def write_export(result: ExportResult, out: str | Path, format: Format = "jsonl") -> Path:
    """Write ``result`` to the folder ``out``: ``train.jsonl`` and ``test.jsonl`` (``jsonl``)
    or a ``DatasetDict.save_to_disk`` folder (``hf``; an empty split is left out, since an
    empty dataset has no columns), plus ``manifest.json`` with the report.

    Written into a temporary folder beside ``out`` and renamed into place: a failure never
    leaves a half-written export. ``out`` may be new, empty, or an earlier export (which is
    replaced); anything else is refused with :class:`ExportPathError`.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    out = Path(out).expanduser().absolute()
    _check_target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic.new_folder(out) as tmp:
            if format == "jsonl":
                _write_jsonl(result, tmp)
            else:
                _write_hf(result, tmp)
            manifest = {
                "kind": result.report.kind,
                "format": format,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": sorted(p.name for p in tmp.iterdir()),
                "report": asdict(result.report),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    except OSError as err:
        raise ExportPathError(out, _reason(err)) from err
    log.info("Wrote %s export (%s) to %s", result.report.kind, format, out)
    return out


def write_jsonl(result: ExportResult, out: str | Path) -> Path:
    return write_export(result, out, "jsonl")


def write_hf(result: ExportResult, out: str | Path) -> Path:
    return write_export(result, out, "hf")


def _write_jsonl(result: ExportResult, folder: Path) -> None:
    for split, rows in result.splits().items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_hf(result: ExportResult, folder: Path) -> None:
    from datasets import Dataset, DatasetDict  # slow to import: only when asked for

    DatasetDict(
        {split: Dataset.from_list(rows) for split, rows in result.splits().items() if rows}
    ).save_to_disk(str(folder))


def _check_target(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportPathError(out, "it is a file, not a folder")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportPathError(
            out, f"the folder is not empty and holds no earlier export (no {MANIFEST}), so it "
            "is not replaced"
        )


def _reason(err: OSError) -> str:
    what = (err.strerror or type(err).__name__).lower()
    return f"{what} ({err.filename})" if err.filename else what


def summarize(report: ExportReport) -> Sequence[str]:
    """The report as lines for a terminal."""
    unit = "pairs" if report.kind == "preference" else "rows"
    lines = [
        f"{report.kind}: {report.rows_in} {unit} in, {report.rows_out} out "
        f"(train {report.train} from {report.train_conversations} conversations, "
        f"test {report.test} from {report.test_conversations})",
        f"  duplicates dropped {report.duplicates_dropped}, filtered out {report.filtered_out}, "
        f"skipped {report.skipped_identical} identical and {report.skipped_empty} empty",
    ]
    if report.by_signal:
        signals = ", ".join(f"{k} {v}" for k, v in report.by_signal.items())
        lines.append(f"  from: {signals}; imported {report.imported}")
    if report.by_origin:
        lines.append("  origin: " + ", ".join(f"{k} {v}" for k, v in report.by_origin.items()))
    if report.masked:
        lines.append(f"  masked: {report.masked.get('email', 0)} e-mail addresses, "
                     f"{report.masked.get('phone', 0)} phone numbers")
    return lines
