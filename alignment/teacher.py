"""The teacher: an OpenAI-compatible server (vLLM serving a bigger model, llama.cpp's server,
...) that writes ``assistant data synth``'s questions instead of a version of the chat's model.

    assistant data synth --teacher-url http://gpu-box:8000/v1 --teacher-model Qwen2.5-32B-Instruct

It is the chat's own OpenAI engine (``bootstrap.build_engine`` with ``engine = "openai"``),
pointed at the teacher: the same client, time limits and errors. Prompt tokens (only counted
for statistics here) use ``ASSISTANT_MODEL``'s tokenizer when its files are local, else the
server's ``/tokenize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from alignment.errors import AlignmentError
from assistant.config import OpenAISettings, Settings
from assistant.errors import AssistantError
from assistant.engines.generation import GenerationParams
from assistant.engines.messages import Messages

if TYPE_CHECKING:
    from assistant.engines.openai_server import OpenAIGenerator

#: Where the teacher's API key may come from instead of ``--teacher-key``.
KEY_ENV = "ASSISTANT_TEACHER_API_KEY"

Answer = Callable[[list[Messages], GenerationParams], list[str]]


class TeacherUnavailable(AlignmentError):
    """The teacher cannot be reached or refuses (the product's engine error, reworded for the
    teacher's options)."""

    def __init__(self, url: str, err: AssistantError, after: str = "") -> None:
        # The engine's own message names the chat's settings; its cause says what happened.
        detail = str(err.__cause__) if err.__cause__ is not None else str(err)
        super().__init__(
            f"The teacher at {url} cannot be used ({detail}). Start it, or check --teacher-url, "
            f"--teacher-model and --teacher-key (or {KEY_ENV}).{after}")


def build_teacher(settings: Settings, url: str, model: str | None = None,
                  api_key: str | None = None, workers: int = 8) -> OpenAIGenerator:
    """The teacher's generator; raises :class:`TeacherUnavailable` when it does not answer
    (before anything is asked)."""
    from assistant.bootstrap import build_engine

    teacher = settings.model_copy(update={"engine": "openai", "openai": OpenAISettings(
        base_url=url, api_key=api_key, model=model, timeout_s=settings.openai.timeout_s,
        workers=workers)})
    try:
        return build_engine(teacher).generator
    except AssistantError as err:
        raise TeacherUnavailable(url, err, " Nothing was tried.") from err


def reworded(answer: Answer, url: str) -> Answer:
    """``answer`` (prompts, params -> the teacher's replies) raising :class:`TeacherUnavailable`
    when the teacher stops answering."""

    def wrapped(prompts: list[Messages], params: GenerationParams) -> list[str]:
        try:
            return answer(prompts, params)
        except AssistantError as err:
            raise TeacherUnavailable(url, err) from err

    return wrapped
