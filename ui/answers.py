"""One answer in the chat: text with citations, sources, provenance, rating, tags and the
actions (regenerate, flip versions, best, edit); and the A/B ballot of compare mode."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import streamlit as st

from assistant.chat.answer_modes import quotes, unverified_quotes
from assistant.chat.prompting import trim_notice
from assistant.chat.service import SAYS_NO_DOCUMENT, ChatService
from assistant.chat.citations import MIN_RUN, Citations, cite
from assistant.errors import AssistantError
from assistant.storage import StoredMessage
from assistant.storage.conversations import RETRIEVAL
from ui.state import CONTINUE, EDIT_ERROR, REGENERATE, guard, guard_cb, set_state
from ui.text import plain, safe_markdown

if TYPE_CHECKING:
    from assistant.storage.comparisons import StoredComparison
    from assistant.storage.conversations import SourceRecord

TAGS = ["inaccurate", "unhelpful", "unsafe", "wrong citation", "too long", "off topic"]


# -- citations ---------------------------------------------------------------------------------
def attributed_mark(n: int) -> str:
    """How a marker the product added (not the model) shows: grey, with an "≈"."""
    return f":gray[≈{n}]"


ATTRIBUTED_HELP = (
    "The model did not cite this sentence itself. It is marked because one source holds "
    "every word it adds to the question and shares a run of at least "
    f"{MIN_RUN} consecutive words with it."
)


def with_citations(text: str, m: StoredMessage, question: str = "") -> tuple[str, Citations, str | None]:
    """An answer's Markdown with its citations, the citations, and the legend that tells
    the model's own markers ([1], as it wrote them) from attributed ones (≈1, grey); no
    legend when there is no marker."""
    if not m.sources:
        return safe_markdown(text), Citations(text), None
    c = cite(text, [s.text for s in m.sources], question, mark=attributed_mark)
    parts = []
    quoted = {n for _, n in quotes(text)} & c.explicit  # the answer mode's quotes and markers
    if quoted:
        parts.append(f"[n]: quoted word for word from {_numbers(quoted)}, highlighted below")
    if c.explicit - quoted:
        parts.append(f"[n]: cited by the model ({_numbers(c.explicit - quoted)})")
    marked = sorted({n for n in range(1, len(m.sources) + 1) if attributed_mark(n) in c.text})
    if marked:
        parts.append(f"{attributed_mark(marked[0])}: attributed, not cited by the model "
                     f"({_numbers(marked)})")
    if m.record is not None and (m.record.params or {}).get("formed") == "head":
        parts.append("the answerability head judged that no source answers the question; the model "
                     "was not asked")
    return safe_markdown(c.text), c, " · ".join(parts) or None


def _numbers(ns: Iterable[int]) -> str:
    return ", ".join(f"source {n}" for n in sorted(ns))


def _escaped(text: str) -> str:
    """``text`` as Markdown that shows it as it is, line breaks kept."""
    return "  \n".join(plain(line) if line.strip() else "" for line in text.split("\n"))


def highlighted(text: str, spans: tuple[tuple[int, int], ...]) -> str:
    """A source's text as Markdown with its evidence (``spans``) highlighted."""
    out, at = [], 0
    for a, b in sorted(spans):
        if a < at or b > len(text):
            continue  # overlapping or out of range: not from this text
        out.append(_escaped(text[at:a]))
        out.append(f":orange-background[{_escaped(text[a:b])}]")
        at = b
    out.append(_escaped(text[at:]))
    return "".join(out)


def _source_text(src: SourceRecord) -> None:
    if src.evidence:
        st.markdown(highlighted(src.text, src.evidence),
                    help="Highlighted: the sentence that backs the answer.")
    else:
        st.text(src.text)


def _sources(m: StoredMessage, c: Citations) -> None:
    """The cited sources under an answer (expandable), then the others it was shown."""
    cited = [src for src in m.sources if src.cited]
    others = [src for src in m.sources if not src.cited]
    quoted = {n for _, n in quotes(m.content)}
    for src in cited:
        # plain() trims its text: the separator goes outside it, or the space before it is lost.
        where = f" · {plain(src.location)}" if src.location else ""
        how = (" · quoted" if src.rank in quoted
               else " · cited by the model" if src.rank in c.explicit
               else " · attributed" if src.rank in c.attributed else "")
        label = f"[{src.rank}] {plain(src.document_name)}{where}{how}"
        with st.expander(label, icon=":material/format_quote:", expanded=bool(src.evidence)):
            _source_text(src)
    if others:
        label = "Sources shown to the model" if not cited else "Other sources shown to the model"
        with st.expander(f"{label} ({len(others)})", icon=":material/library_books:"):
            for src in others:
                where = f" · {plain(src.location)}" if src.location else ""
                st.markdown(f"**[{src.rank}] {plain(src.document_name)}{where}**")
                st.text(src.text)


def answer(service: ChatService, m: StoredMessage, question: str = "") -> None:
    """``question``: the text ``m`` answers (attribution leaves out its words)."""
    body, c, legend = with_citations(m.edited or m.content, m, question)
    st.markdown(body)
    if legend:
        st.caption(legend, help=ATTRIBUTED_HELP)
    for quote, n in unverified_quotes(m.edited or m.content, [src.text for src in m.sources]):
        st.caption(f":material/warning: Not a quote: source {n} does not say "
                   f"\u201c{plain(quote)}\u201d word for word.")
    if m.edited:
        # A rating and comment were about the model's answer, not the corrected text: they
        # stay with the original (changeable there), and the corrected text shows none.
        with st.expander("Edited by you: the model's original answer", icon=":material/edit_note:"):
            st.text(m.content)
            _rating(service, m)
    if m.sources:
        _sources(m, c)
    _answer_footer(service, m)


def _answer_footer(service: ChatService, m: StoredMessage) -> None:
    r = m.record
    if r is not None:
        if r.retrieval in SAYS_NO_DOCUMENT:
            st.caption(":material/info: " + RETRIEVAL[r.retrieval])
        if r.trimmed_turns:
            st.caption(":material/info: " + trim_notice(r.trimmed_turns, service.generator.context_window))
        bits = [
            f"{r.model_version}",
            f"{r.completion_tokens} tokens",
            f"{r.latency_ms / 1000:.1f} s",
            f"T={r.params.get('temperature')}",
        ]
        if r.stopped:
            bits.insert(0, ":material/stop_circle: stopped")
        elif r.cut_at_limit:
            bits.insert(0, ":material/content_cut: cut at the token limit")
        engine = f"\n\nEngine: {r.engine}" if r.engine else ""
        st.caption(" · ".join(bits),
                   help=f"Model: {r.model_id}{engine}\n\nPrompt tokens: {r.prompt_tokens}")
    if not m.edited:
        _rating(service, m)
    _actions(service, m)


def _rating(service: ChatService, m: StoredMessage) -> None:
    """Thumbs, comment and tags of the model's answer."""
    key = f"fb_{m.id}"
    default = {1: 1, -1: 0}.get(m.rating)
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    with row:
        st.feedback("thumbs", key=key, default=default, on_change=_rate, args=(service, m.id))
        st.text_input(
            "Comment", value=m.comment or "", key=f"comment_{m.id}",
            placeholder="Why? (optional)",
            label_visibility="collapsed", on_change=_rate, args=(service, m.id),
        )
    st.pills(
        "Tags", TAGS, selection_mode="multi", default=[t for t in m.tags if t in TAGS],
        key=f"tags_{m.id}", label_visibility="collapsed", on_change=_rate, args=(service, m.id),
    )


def _actions(service: ChatService, m: StoredMessage) -> None:
    """Regenerate, flip between the versions of this answer, mark the best, edit."""
    # A horizontal container keeps the row on one line at phone width too (columns stack).
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    row.button(
        "", key=f"regen_{m.id}", icon=":material/refresh:", help="Answer again (keeps this one)",
        on_click=set_state, args=(REGENERATE, m.id), disabled=m.reply_to_id is None,
    )
    if m.record is not None and m.record.cut_at_limit:
        row.button(
            "Continue", key=f"continue_{m.id}", icon=":material/play_arrow:",
            help="The answer was cut at the token limit: ask the model to go on with it "
            "(the rest is appended to this answer)",
            on_click=set_state, args=(CONTINUE, m.id),
        )
    alts = m.alternatives
    if len(alts) > 1:
        i = alts.index(m.id)
        row.button(
            "", key=f"alt_prev_{m.id}", icon=":material/chevron_left:", disabled=i == 0,
            help="Previous version", on_click=guard_cb, args=(service.store.set_active, alts[i - 1]),
        )
        row.caption(f"{i + 1} / {len(alts)}", width="content")
        row.button(
            "", key=f"alt_next_{m.id}", icon=":material/chevron_right:",
            disabled=i == len(alts) - 1, help="Next version",
            on_click=guard_cb, args=(service.store.set_active, alts[min(i + 1, len(alts) - 1)]),
        )
        if m.rating == -1 and not m.chosen:
            # Best makes it "chosen" in training data: a 👎 answer would teach the opposite
            # of the rating. Ask first.
            with row.popover("Best", help="Mark this version the best"):
                st.warning("You rated this answer :material/thumb_down:. Marking it the best "
                           "makes it the **chosen** answer in training data (the others become "
                           "rejected).", icon=":material/warning:")
                st.button("Mark it the best anyway", key=f"best_{m.id}",
                          on_click=guard_cb, args=(service.store.choose, m.id))
        else:
            row.button(
                "Best" if not m.chosen else "Best ✓", key=f"best_{m.id}",
                type="primary" if m.chosen else "secondary", disabled=m.chosen,
                help="Mark this version the best: the others become 'rejected' in training data",
                on_click=guard_cb, args=(service.store.choose, m.id),
            )
    with row.popover("", icon=":material/edit:", help="Write a better answer"):
        st.text_area("Your better answer", value=m.edited or m.content, key=f"edit_text_{m.id}")
        st.button("Save edit", key=f"edit_save_{m.id}", on_click=_save_edit, args=(service, m.id))


def _save_edit(service: ChatService, message_id: int) -> None:
    try:
        service.store.edit(message_id, st.session_state.get(f"edit_text_{message_id}", ""))
    except AssistantError as err:
        st.session_state[EDIT_ERROR] = str(err)


def _rate(service: ChatService, message_id: int) -> None:
    value = st.session_state.get(f"fb_{message_id}")
    rating = None if value is None else (1 if value == 1 else -1)
    comment = st.session_state.get(f"comment_{message_id}") or None
    tags = st.session_state.get(f"tags_{message_id}") or ()
    guard(service.store.rate, message_id, rating, comment, tags)


# -- compare mode --------------------------------------------------------------------------------
def ballot(service: ChatService, cmp: StoredComparison, every: dict) -> None:
    """Two answers side by side, model names hidden until the vote."""
    left, right = st.columns(2)
    for col, label, mid in ((left, "A", cmp.a_id), (right, "B", cmp.b_id)):
        with col, st.chat_message("assistant"):
            st.caption(f"Answer {label}")
            st.markdown(safe_markdown(every[mid].content))
    row = st.container(horizontal=True, gap="small")
    for vote, text in (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both bad")):
        row.button(text, key=f"vote_{vote}_{cmp.id}", on_click=guard_cb,
                   args=(service.comparisons.vote, cmp.id, vote))


def verdict(cmp: StoredComparison, every: dict) -> None:
    a, b = every[cmp.a_id], every[cmp.b_id]
    result = {"a": "A won", "b": "B won", "tie": "a tie", "both_bad": "both bad"}[cmp.vote]
    versions = f"A: {_version(a)}, B: {_version(b)}"
    st.caption(f":material/balance: Compared: {result} ({versions})")


def _version(m: StoredMessage) -> str:
    return m.record.model_version if m.record else "?"
