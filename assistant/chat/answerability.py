"""Whether the sources answer a question: an answerability head.

The base model with a one-output head and a LoRA (`assistant train answerability`, from the
grounded examples: questions their sources answer and questions they do not) reads the top
source and the question and gives the probability that the source does not answer it. In
quoted mode the chat says "The documents do not say." when that probability is above the
head's threshold (chosen when it was trained, on examples it did not learn from), without
asking the language model at all (:func:`assistant.chat.answer_modes.compose`).

Why a head: a 135M model rarely writes the abstention on questions its sources do not
answer, and the signals that need no training (the question's similarity to the best
sentence, its words the source covers, the answer's likelihood) barely tell those
questions apart (docs/benchmarks.md, "Answerability").

Torch and peft are imported when a head is loaded, not before (the UI imports this module).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.versions import ANSWERABILITY_KIND

if TYPE_CHECKING:
    from assistant.config import Settings
    from assistant.engines.models import LoadedModel
    from assistant.registry import Registry, Version

log = logging.getLogger(__name__)

#: Tokens of one input (the source's start and the whole question): what it was measured at.
MAX_LENGTH = 384


def encode(tokenizer: Any, question: str, source: str, max_length: int = MAX_LENGTH) -> list[int]:
    """``Text: <source>\\nQuestion: <question>`` as token ids, at most ``max_length``: the
    source is cut from its end so that the question, last, is whole (a question longer than
    it all keeps its end)."""
    tail = tokenizer(f"\nQuestion: {question}", add_special_tokens=False)["input_ids"][-max_length:]
    head = tokenizer(f"Text: {source}", add_special_tokens=False)["input_ids"]
    return head[:max(0, max_length - len(tail))] + tail


@dataclass
class AnswerabilityHead:
    """A loaded head: ``probabilities`` of "not answered", ``unanswerable`` against its threshold."""

    model: Any
    tokenizer: Any
    version: str
    #: At this probability or above, a question counts as not answered by its sources.
    threshold: float
    max_length: int = MAX_LENGTH
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def probabilities(self, pairs: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
        """For each (question, source): the probability that the source does not answer it."""
        import torch

        out: list[float] = []
        device = next(self.model.parameters()).device
        with self._lock, torch.inference_mode():  # one model, shared by the sessions
            for i in range(0, len(pairs), batch_size):
                ids = [encode(self.tokenizer, q, s, self.max_length) for q, s in pairs[i:i + batch_size]]
                batch = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(device)
                logits = self.model(**batch).logits[:, 0].float()
                out.extend(torch.sigmoid(logits).tolist())
        return out

    def unanswerable(self, question: str, sources: Sequence[str]) -> bool:
        """Whether the top source (the first) does not answer ``question`` (no sources: False,
        the chat answers those plainly)."""
        if not sources:
            return False
        return self.probabilities([(question, sources[0])])[0] >= self.threshold


def head_threshold(version: Version) -> float:
    """The threshold kept with a head's version: chosen by `assistant models calibrate` on
    questions about the documents, else by its training on held-out examples (0.5 when
    neither is there)."""
    from assistant.registry import CALIBRATION

    for value in ((version.metrics.get(CALIBRATION) or {}).get("head_threshold"),
                  (version.metrics.get("answerability") or {}).get("threshold")):
        if isinstance(value, (int, float)):
            return float(value)
    return 0.5


def load_head(loaded: LoadedModel, version: Version) -> AnswerabilityHead:
    """``version``'s head on the base model ``loaded``, merged (ValueError with what to do when
    it is not an answerability head of this base)."""
    from peft import PeftModel

    if version.kind != ANSWERABILITY_KIND:
        raise ValueError(f"{version.name} is a {version.kind} version, not an answerability head "
                         "(`assistant train answerability` trains one).")
    if version.base_fingerprint != loaded.fingerprint:
        raise ValueError(f"The answerability head {version.name} was trained on another base model "
                         f"({version.base_model}); the configured base is {loaded.model_id}.")
    from assistant.engines.models import load_sequence_classifier

    model = load_sequence_classifier(loaded)
    model = PeftModel.from_pretrained(model, str(version.adapter_dir)).merge_and_unload().eval()
    return AnswerabilityHead(model, loaded.tokenizer, version.name, head_threshold(version))


class HeadSlot:
    """The head the chat uses (``answers.answerability``: a version's name, ``newest``, or
    ``off``), loaded on first use and kept. A head that cannot be loaded is logged once and
    the chat answers without it."""

    def __init__(self, settings: Settings, registry: Registry | None) -> None:
        self.settings, self.registry = settings, registry
        self._lock = threading.Lock()
        self._loaded: tuple[str, AnswerabilityHead | None] | None = None

    def chosen(self) -> Version | None:
        """The head's version the setting names now (None: off, or none trained)."""
        name = self.settings.answers.answerability
        if self.registry is None or name == "off":
            return None
        return self.registry.newest(ANSWERABILITY_KIND) if name == "newest" else self.registry.get(name)

    def head(self) -> AnswerabilityHead | None:
        try:
            version = self.chosen()
        except Exception as err:  # noqa: BLE001 - a missing version must not stop the chat
            return self._failed(self.settings.answers.answerability, err)
        if version is None:
            return None
        with self._lock:
            if self._loaded is None or self._loaded[0] != version.name:
                try:
                    from assistant.engines.models import load_model

                    # In the dtype its threshold was chosen in (training's: float32 on a CPU).
                    loaded = load_model(self.settings, purpose="training")
                    self._loaded = (version.name, load_head(loaded, version))
                    log.info("Answerability head %s loaded (threshold %.3g)", version.name,
                             self._loaded[1].threshold)
                except Exception as err:  # noqa: BLE001 - answer without it, say why once
                    return self._failed(version.name, err)
            head = self._loaded[1]
            if head is not None:  # `models calibrate` may have chosen another since it was loaded
                head.threshold = head_threshold(version)
            return head

    def _failed(self, name: str, err: Exception) -> None:
        if self._loaded is None or self._loaded[0] != name:
            log.warning("The answerability head %s is not used: %s", name, err)
            self._loaded = (name, None)
        return None

    def unanswerable(self, question: str, sources: Sequence[str]) -> bool:
        head = self.head()
        return head is not None and head.unanswerable(question, sources)
