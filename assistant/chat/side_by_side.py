"""Compare mode's two answers streamed together: at once when the engine can generate both at
once (``Generator.concurrent_streams() > 1``, e.g. vLLM behind the OpenAI engine), else A,
then B.

:func:`interleave` turns the two :class:`~assistant.chat.service.Reply` objects into one sequence of
:class:`Piece` s in the order their text arrives, so that one thread (the UI's) can show both.
A side that fails ends with its error and the other goes on; each reply stores itself as it
ends, so nothing produced is lost. Closing the replies (a Stop) ends the sequence.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.errors import AssistantError

if TYPE_CHECKING:
    from assistant.chat.service import Reply


@dataclass(frozen=True)
class Piece:
    """What happened on one side (0: A, 1: B): some ``text``, or its end (``done``), with
    ``error`` when it failed."""

    side: int
    text: str = ""
    done: bool = False
    error: AssistantError | None = None


def interleave(replies: Iterable[Reply], at_once: bool) -> Iterator[Piece]:
    """The replies' text as it arrives, each side ending with a ``done`` piece.

    ``at_once``: read every reply on its own thread, so that their pieces mix as the engine
    produces them; otherwise read one reply to its end, then the next. An error that is not
    an :class:`AssistantError` (a bug) is raised here, after the replies are closed.
    """
    replies = list(replies)
    running = len(replies)
    try:
        for piece in _at_once(replies) if at_once else _in_turn(replies):
            running -= piece.done
            yield piece
    finally:
        if running:  # the consumer left early, or a side raised: stop them all
            for reply in replies:
                reply.close()


def _in_turn(replies: list[Reply]) -> Iterator[Piece]:
    for side, reply in enumerate(replies):
        yield from _read(side, reply)


def _at_once(replies: list[Reply]) -> Iterator[Piece]:
    pieces: queue.Queue = queue.Queue()

    def pump(side: int, reply: Reply) -> None:
        try:
            for piece in _read(side, reply):
                pieces.put(piece)
        except BaseException as err:  # noqa: BLE001 - raised on the consuming thread
            pieces.put(err)

    for side, reply in enumerate(replies):
        threading.Thread(target=pump, args=(side, reply), daemon=True,
                         name=f"compare-{'AB'[side]}").start()
    running = len(replies)
    while running:
        piece = pieces.get()
        if isinstance(piece, BaseException):
            raise piece
        running -= piece.done
        yield piece


def _read(side: int, reply: Reply) -> Iterator[Piece]:
    try:
        for chunk in reply:
            yield Piece(side, chunk)
    except AssistantError as err:  # the reply has stored what it produced
        yield Piece(side, done=True, error=err)
        return
    yield Piece(side, done=True)
