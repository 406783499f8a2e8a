"""The name of the base model as a version: what the chat answers with when no adapter is
active, and the parent of a version trained from scratch. Torch-free, so that the UI, the
registry and the doctor can use it without loading the model code."""

from types import MappingProxyType

BASE_VERSION = "base"

#: The kind of a reward model's version: it scores answers and never chats.
REWARD_KIND = "reward"
#: The kind of an answerability head's version (`assistant train answerability`): it tells
#: whether a source answers a question, for quoted mode's abstentions, and never chats.
ANSWERABILITY_KIND = "answerability"
#: The kinds whose versions judge and never chat, and what one is called. Every other kind
#: is a chat version (the kinds of training: alignment.training_kinds).
JUDGE_KINDS = MappingProxyType({REWARD_KIND: "a reward model", ANSWERABILITY_KIND: "an answerability head"})


def chats(kind: str) -> bool:
    """Whether a version of ``kind`` writes answers (the chat can activate it)."""
    return kind not in JUDGE_KINDS


def called(kind: str) -> str:
    """``a reward model``, ``an answerability head``, else ``a KIND version``."""
    return JUDGE_KINDS.get(kind, f"a {kind} version")
