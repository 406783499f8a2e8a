"""Rows longer than ``max_length`` tokens, dealt with before TRL sees them, and counted.

TRL 1.16 treats an over-long row differently per trainer: RewardTrainer drops the pair
without a word, DPOTrainer cuts the end of the answers (``truncation_mode="keep_start"``,
the only mode not deprecated) and drops a row whose prompt alone fills ``max_length``,
KTOTrainer cuts the end of the answer. None of them keeps the answers, which are what the
row teaches, and none reports how many rows it changed.

So the rows are fitted here, the same way for every trainer: by default the *prompt* is
shortened from the left (its oldest messages first, then the start of the earliest one
left) until the prompt and its longest answer fit; the answers are kept whole. A row whose
answer alone does not fit is dropped. With ``drop_long`` an over-long row is dropped
instead. :class:`LengthReport` says which happened to how many rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Marks a prompt message whose beginning was cut.
CUT = "… "
#: Fewest prompt tokens (template included) a shortened row keeps; with less the answer
#: has no question left to answer and the row is dropped.
MIN_PROMPT_TOKENS = 16


@dataclass
class LengthReport:
    """What fitting did to one split."""

    given: int = 0
    kept: int = 0  # fitted as they were
    truncated: int = 0  # prompt shortened from the left, answers whole
    dropped_too_long: int = 0
    max_length: int | None = None
    mode: str = "truncate"  # truncate | drop

    @property
    def used(self) -> int:
        return self.kept + self.truncated

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "used": self.used}


def _completions(row: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [row[k] for k in ("chosen", "rejected", "completion") if isinstance(row.get(k), list)]


def _length(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], generation_prompt: bool = False) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                        return_dict=False)
    return len(ids)


def _row_length(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> int:
    if "messages" in row:
        return _length(tokenizer, row["messages"])
    return max(_length(tokenizer, row["prompt"] + c) for c in _completions(row))


def _shorten_prompt(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any], max_length: int) -> dict[str, Any] | None:
    """The row with its prompt cut from the left to fit, or None when the answers alone do
    not leave room for a prompt."""
    prompt = [dict(m) for m in row["prompt"]]
    full = _row_length(tokenizer, row)
    answer = full - _length(tokenizer, prompt, generation_prompt=True)
    budget = max_length - answer
    if budget < MIN_PROMPT_TOKENS:
        return None
    system = [m for m in prompt[:1] if m.get("role") == "system"]
    rest = prompt[len(system):]
    for _ in range(64):  # each pass removes a message or the excess tokens: a few at most
        length = _length(tokenizer, system + rest, generation_prompt=True)
        if length <= budget:
            return {**row, "prompt": system + rest}
        if len(rest) > 1:
            rest = rest[1:]
            continue
        if not rest:
            return None
        first = rest[0]
        ids = tokenizer(str(first["content"]), add_special_tokens=False)["input_ids"]
        keep = len(ids) - (length - budget) - len(tokenizer(CUT, add_special_tokens=False)["input_ids"]) - 1
        if keep <= 0:
            return None
        rest = [{**first, "content": CUT + tokenizer.decode(ids[-keep:])}]
    return None


def fit_rows(rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int | None,
             drop: bool = False) -> tuple[list[dict[str, Any]], LengthReport]:
    """``rows`` fitted to ``max_length`` tokens (see the module's docstring)."""
    report = LengthReport(given=len(rows), max_length=max_length, mode="drop" if drop else "truncate")
    if max_length is None:
        report.kept = len(rows)
        return list(rows), report
    out = []
    for row in rows:
        if _row_length(tokenizer, row) <= max_length:
            out.append(row)
            report.kept += 1
            continue
        fitted = None if drop or "prompt" not in row else _shorten_prompt(tokenizer, row, max_length)
        if fitted is None:
            report.dropped_too_long += 1
        else:
            out.append(fitted)
            report.truncated += 1
    return out, report
