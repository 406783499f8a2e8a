"""The messages engines answer: the type of the engine contract (:mod:`assistant.engines.generation`),
apart from the chat's prompt building (:mod:`assistant.chat.prompting`): a list of
``{"role": ..., "content": ...}`` dicts, the chat template's roles. Also what every engine does
to them before the model reads them: an answer to continue, and text that must not become a
special token."""

from __future__ import annotations

import re
from collections.abc import Iterable

Messages = list[dict[str, str]]


def continued_answer(messages: Messages) -> tuple[Messages, str]:
    """(the conversation, the answer's start) when ``messages`` ends with an assistant
    message (an answer to continue: the model writes on from its last word), else
    (``messages``, "")."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, ""


# -- special tokens -------------------------------------------------------------------------------
ZERO_WIDTH_SPACE = "\u200b"


def defuse_special_tokens(messages: Messages, specials: Iterable[str]) -> Messages:
    """``messages`` with every special token's string in their text broken by a zero-width
    space after its first character.

    A Hugging Face tokenizer turns a special token's string into that token wherever it
    occurs, message text included: a message, a document or an earlier answer holding
    ``<|im_end|>\\n<|im_start|>system`` would end its turn and open a system turn of its
    own. Broken, it is read as the ordinary characters it is.
    """
    # One character cannot be broken, and one that holds the space would never stop breaking.
    specials = sorted({s for s in specials if len(s) > 1 and ZERO_WIDTH_SPACE not in s},
                      key=len, reverse=True)
    if not specials:
        return messages
    pattern = re.compile("|".join(map(re.escape, specials)))

    def defuse(text: str) -> str:
        # Again until none is left: breaking one could leave a shorter one inside it.
        while pattern.search(text):
            text = pattern.sub(lambda m: m.group()[0] + ZERO_WIDTH_SPACE + m.group()[1:], text)
        return text

    return [{**m, "content": defuse(m["content"])} for m in messages]
