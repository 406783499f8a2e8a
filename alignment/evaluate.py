"""``assistant eval``: is a candidate version better than the active one?

Three measurements, stored as an evaluation in the registry (what the activation gate reads):

1. the reward model's accuracy on held-out preference pairs (how far to trust the judge);
2. the candidate's win rate against the baseline: both answer the held-out prompts
   (greedy), the reward model scores both answers, a tie counts half;
3. answer accuracy on a small retrieval QA set (``evalsets/squad_qa.jsonl``): the paragraph is
   given as a numbered source in the chat's own prompt format; an answer is correct when it
   contains a reference answer.

    assistant eval v4                    # against the active version, newest reward model
    assistant eval v4 --against base --reward v2 --prompts 32
"""

from __future__ import annotations

import json
import logging
import re
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from tqdm.auto import tqdm

from alignment.errors import NoTrainingData
from alignment.export import ExportOptions, export
from assistant.bootstrap import open_database, open_registry
from assistant.config import Settings
from assistant.generation import template_input
from assistant.models import LoadedModel, load_model
from assistant.prompting import SOURCES_INSTRUCTION, Messages, with_sources
from assistant.registry import EvalRecord, Registry
from assistant.versions import BASE_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    baseline: str | None = None  # None: the active version
    reward: str | None = None  # None: the newest reward model
    pairs: int = 200  # held-out pairs the reward model is checked on
    prompts: int = 16  # held-out prompts both versions answer
    qa: int = 24  # QA questions (at most the set's 24)
    max_new_tokens: int = 64
    qa_max_new_tokens: int = 32
    batch_size: int = 8
    test_fraction: float = 0.1  # the same split as training's default
    split_seed: int = 0


@dataclass(frozen=True)
class QAItem:
    context: str
    question: str
    answers: tuple[str, ...]
    title: str = ""


def qa_items(limit: int | None = None) -> list[QAItem]:
    text = resources.files("alignment.evalsets").joinpath("squad_qa.jsonl").read_text("utf-8")
    items = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = [QAItem(i["context"], i["question"], tuple(i["answers"]), i.get("title", "")) for i in items]
    return out[:limit] if limit is not None else out


def _normalize(text: str) -> str:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def is_correct(answer: str, references: tuple[str, ...]) -> bool:
    said = _normalize(answer)
    return any(_normalize(ref) and _normalize(ref) in said for ref in references)


def qa_messages(item: QAItem, system_prompt: str) -> Messages:
    """The prompt the chat would send with this paragraph retrieved as source [1]."""
    source = _Source(item.title or "document", "", item.context)
    system = f"{system_prompt}\n\n{SOURCES_INSTRUCTION}".strip()
    return [{"role": "system", "content": system},
            {"role": "user", "content": with_sources(item.question, [source])}]


@dataclass(frozen=True)
class _Source:
    document_name: str
    location: str
    text: str


class VersionModels:
    """The base model with the compared versions' adapters loaded side by side (peft),
    generating in batches (greedy) with whichever is asked for."""

    def __init__(self, loaded: LoadedModel, registry: Registry, names: set[str]) -> None:
        from peft import PeftModel

        self.loaded = loaded
        self.model = loaded.model
        self.peft = None
        for name in sorted(names - {BASE_VERSION}):
            version = registry.check_servable(name, loaded.fingerprint)
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, str(version.adapter_dir), adapter_name=name)
            else:
                self.peft.load_adapter(str(version.adapter_dir), adapter_name=name)
        if self.peft is not None:
            self.peft.eval()

    @contextmanager
    def using(self, name: str) -> Iterator[torch.nn.Module]:
        if self.peft is None:
            yield self.model
        elif name == BASE_VERSION:
            with self.peft.disable_adapter():
                yield self.peft
        else:
            self.peft.set_adapter(name)
            yield self.peft

    @torch.inference_mode()
    def generate(self, name: str, conversations: list[Messages], max_new_tokens: int,
                 batch_size: int = 8, desc: str = "") -> list[str]:
        tok = self.loaded.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        out: list[str] = []
        try:
            with self.using(name) as model:
                for i in tqdm(range(0, len(conversations), batch_size), desc=desc, leave=False):
                    batch = [template_input(tok, c) for c in conversations[i:i + batch_size]]
                    enc = tok.apply_chat_template(
                        batch, add_generation_prompt=True, padding=True,
                        return_tensors="pt", return_dict=True,
                    ).to(self.loaded.device)
                    ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                         temperature=None, top_p=None, top_k=None,
                                         pad_token_id=tok.pad_token_id)
                    new = ids[:, enc["input_ids"].shape[1]:]
                    out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
        finally:
            tok.padding_side = side
        return out


def evaluate(
    settings: Settings,
    candidate: str,
    options: EvalOptions | None = None,
    *,
    db=None,  # noqa: ANN001
    loaded: LoadedModel | None = None,
) -> EvalRecord:
    o = options or EvalOptions()
    started = time.perf_counter()
    db = db or open_database(settings)
    registry = open_registry(settings, db)
    baseline = o.baseline or registry.active()
    registry.get(candidate)
    registry.get(baseline)
    reward = registry.get(o.reward) if o.reward else registry.newest("reward")
    loaded = loaded or load_model(settings)
    models = VersionModels(loaded, registry, {candidate, baseline})
    metrics: dict[str, Any] = {"candidate": candidate, "baseline": baseline}

    # Held-out pairs (the default training split's test side).
    try:
        test = export(db, "preference", ExportOptions(test_fraction=o.test_fraction, seed=o.split_seed)).test
    except NoTrainingData:
        test = []
    pairs = test[: o.pairs]
    prompts = list({json.dumps(r["prompt"]): r["prompt"] for r in test}.values())[: o.prompts]

    if reward is not None:
        from alignment.reward_model import load_reward_model

        scorer = load_reward_model(loaded, reward)
        metrics["reward_model"] = reward.name
        if pairs:
            chosen = scorer.score([p["prompt"] for p in pairs], [p["chosen"][0]["content"] for p in pairs])
            rejected = scorer.score([p["prompt"] for p in pairs], [p["rejected"][0]["content"] for p in pairs])
            metrics["reward_accuracy"] = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
            metrics["pairs"] = len(pairs)
        if prompts:
            cand = models.generate(candidate, prompts, o.max_new_tokens, o.batch_size, f"{candidate} answers")
            base = models.generate(baseline, prompts, o.max_new_tokens, o.batch_size, f"{baseline} answers")
            sc, sb = scorer.score(prompts, cand), scorer.score(prompts, base)
            wins = sum(a > b for a, b in zip(sc, sb))
            ties = sum(a == b for a, b in zip(sc, sb))
            metrics.update(
                win_rate=(wins + ties / 2) / len(prompts), wins=wins, ties=ties,
                losses=len(prompts) - wins - ties, prompts=len(prompts),
                mean_reward=sum(sc) / len(sc), baseline_mean_reward=sum(sb) / len(sb),
                examples=[{"prompt": p[-1]["content"][:500], "candidate": c[:500], "baseline": b[:500]}
                          for p, c, b in list(zip(prompts, cand, base))[:3]],
            )
        del scorer
    else:
        metrics["note"] = "no reward model: win rate and reward accuracy not measured"

    items = qa_items(o.qa)
    if items:
        system = settings.generation.system_prompt
        conversations = [qa_messages(i, system) for i in items]
        for name, key in ((candidate, "qa_accuracy"), (baseline, "baseline_qa_accuracy")):
            answers = models.generate(name, conversations, o.qa_max_new_tokens, o.batch_size, f"{name} QA")
            metrics[key] = sum(is_correct(a, i.answers) for a, i in zip(answers, items)) / len(items)
        metrics["qa_questions"] = len(items)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    log.info("eval %s vs %s: %s", candidate, baseline, metrics)
    return registry.record_evaluation(candidate, baseline, getattr(reward, "name", None), metrics)
