"""A trained reward model (a ``reward`` version) as a scorer: the base model with a scalar
head and the version's LoRA, merged. Used by `train rl` (as TRL's reward function) and by
`assistant eval` (to judge answers)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel

from alignment.errors import IncompatibleVersion
from assistant.engines.chat_template import template_input
from assistant.engines.models import LoadedModel, load_sequence_classifier
from assistant.engines.messages import Messages
from assistant.versions import REWARD_KIND
from assistant.registry import Version


@dataclass
class RewardScorer:
    model: torch.nn.Module
    tokenizer: object
    version: str
    max_length: int = 1024
    #: Texts longer than max_length scored so far: their start (the prompt's oldest part)
    #: was cut, so that the answer being judged is whole.
    shortened: int = 0

    @torch.inference_mode()
    def score(self, prompts: list[Messages], completions: list[str], batch_size: int = 8) -> list[float]:
        """One scalar per (prompt, answer): higher is better."""
        tok = self.tokenizer
        texts = [
            tok.apply_chat_template(template_input(tok, [*p, {"role": "assistant", "content": c}]),
                                    tokenize=False)
            for p, c in zip(prompts, completions, strict=True)
        ]
        out: list[float] = []
        device = next(self.model.parameters()).device
        side, tok.truncation_side = tok.truncation_side, "left"
        try:
            for i in range(0, len(texts), batch_size):
                batch = texts[i:i + batch_size]
                lengths = tok(batch, add_special_tokens=False)["input_ids"]
                self.shortened += sum(len(ids) > self.max_length for ids in lengths)
                enc = tok(batch, padding=True, truncation=True,
                          max_length=self.max_length, return_tensors="pt", add_special_tokens=False)
                out.extend(self.model(**enc.to(device)).logits[:, 0].float().tolist())
        finally:
            tok.truncation_side = side
        return out


def load_reward_model(loaded: LoadedModel, version: Version) -> RewardScorer:
    if version.kind != REWARD_KIND:
        raise IncompatibleVersion(
            f"{version.name} is a {version.kind} version, not a reward model: name a version "
            "trained with `assistant train reward` (`assistant models list` shows the kinds)."
        )
    if version.base_fingerprint != loaded.fingerprint:
        raise IncompatibleVersion(
            f"Reward model {version.name} was trained on another base model "
            f"({version.base_model}); the configured base is {loaded.model_id}."
        )
    model = load_sequence_classifier(loaded)
    model = PeftModel.from_pretrained(model, str(version.adapter_dir)).merge_and_unload()
    model.eval()
    return RewardScorer(model, loaded.tokenizer, version.name)
