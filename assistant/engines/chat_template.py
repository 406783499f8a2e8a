"""The one place where a message list becomes the text a model reads.

Every engine that takes text or tokens (transformers, llama.cpp) renders the model's own
chat template here, after :func:`~assistant.chat.prompting.defuse_special_tokens`, so that both
see the same string and tokenize it to the same ids (tested in tests/test_engine_parity.py).
The template is the Jinja template that ships with the model (``tokenizer_config.json`` or
the GGUF's ``tokenizer.chat_template``), rendered the way transformers'
``apply_chat_template`` renders it: a sandboxed environment with ``trim_blocks`` and
``lstrip_blocks``, ``raise_exception``, ``strftime_now`` and a ``tojson`` that does not
escape HTML. Only jinja2 is imported: no torch, no transformers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from assistant.errors import ModelNotFound
from assistant.engines.messages import Messages, continued_answer, defuse_special_tokens

if TYPE_CHECKING:
    from jinja2 import Template
    from transformers import PreTrainedTokenizerBase

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@lru_cache(maxsize=8)
def _compile(source: str) -> Template:
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template with the strings of its special tokens.

    ``specials`` are the strings that the tokenizer turns into special tokens wherever they
    occur; no message text may contain one (they are defused before rendering).
    ``variables`` are what templates may read besides the messages (``bos_token`` ...).
    """

    source: str
    specials: frozenset[str]
    variables: dict[str, str] = field(default_factory=dict)

    def defuse(self, messages: Messages) -> Messages:
        return defuse_special_tokens(messages, self.specials)

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (defused first), ending where the answer starts."""
        return _compile(self.source).render(
            messages=self.defuse(messages), add_generation_prompt=add_generation_prompt,
            **self.variables,
        )


    def prompt(self, messages: Messages) -> str:
        """The text a model reads to answer ``messages``; when they end with an assistant
        message, the text ends inside that answer, after its last word (the model continues
        it: an answer cut at the token limit)."""
        conversation, start = continued_answer(messages)
        if not start:
            return self.render(messages)
        start = self.defuse([{"role": "assistant", "content": start}])[0]["content"]
        return self.render(conversation) + start


def from_hf_tokenizer(tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    """The template and special tokens of a transformers tokenizer."""
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str) or not source:
        source = CHATML
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials |= set(tokenizer.all_special_tokens)
    variables = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    return ChatTemplate(source, frozenset(specials), variables)


def from_gguf_vocab(template: str | None, specials: Iterable[str],
                    variables: dict[str, str] | None = None, name: str = "") -> ChatTemplate:
    """The template read from a GGUF file (``tokenizer.chat_template``) and the strings of
    its control tokens, as llama.cpp reports them."""
    if template is not None and not isinstance(template, str):
        raise ModelNotFound(f"{name}: its chat template is not text; the file looks corrupt.")
    return ChatTemplate(template or CHATML, frozenset(specials), dict(variables or {}))


def template_input(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> Messages:
    """``messages`` as they go into a transformers tokenizer's chat template (training,
    the reward scorer): no text in them can become one of the tokenizer's special tokens."""
    return from_hf_tokenizer(tokenizer).defuse(messages)
