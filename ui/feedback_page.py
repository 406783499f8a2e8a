"""The Feedback page: what has been collected, a leaderboard of model versions from
compare votes, the pairs behind the training data (delete a bad one), and export.

With login on, a user sees their own feedback and pairs only; the leaderboard (everyone's
votes) and export are for admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from alignment.export import FORMATS, KINDS, SOURCE_FILTERS, ExportOptions, export, summarize, write_export
from assistant.errors import AssistantError
from assistant.leaderboard import MIN_GAMES, leaderboard
from assistant.storage.comparisons import ComparisonStore
from assistant.storage.origins import ORIGIN_FILTERS
from assistant.storage.pairs import delete_pair, list_pairs
from assistant.storage.stats import feedback_stats
from ui import login, resources
from ui.text import error_text, plain

if TYPE_CHECKING:
    from assistant.storage import Database
    from assistant.storage.ownership import Owner
    from assistant.storage.stats import FeedbackStats


def render() -> None:
    st.title("Feedback")
    db = resources.database()
    owner = login.feedback_owner()
    try:
        stats = feedback_stats(db, owner)
    except AssistantError as err:
        st.error(str(err))
        return
    if not stats.by_kind:
        st.info(
            "No feedback yet: rate answers with :material/thumb_up: / :material/thumb_down:, "
            "regenerate and pick the best, edit an answer, or vote in compare mode. "
            "`assistant data import hh-rlhf FILE` seeds public preference data."
        )
    else:
        _counts(stats)
    admin = login.may("export")
    if admin:
        _leaderboard(db)
    _pairs(db, owner)
    if admin:
        _export(db)


def _counts(stats: FeedbackStats) -> None:
    cols = st.columns(min(len(stats.by_kind), 4))
    for i, (kind, n) in enumerate(sorted(stats.by_kind.items())):
        cols[i % len(cols)].metric(kind, n)
    if stats.by_version:
        st.subheader("By model version")
        st.dataframe(
            pd.DataFrame.from_dict(stats.by_version, orient="index").fillna(0).astype(int),
            key="by_version",
        )
    if stats.by_day:
        st.subheader("Over time")
        st.bar_chart(pd.DataFrame.from_dict(stats.by_day, orient="index").fillna(0))
    if stats.tags:
        st.caption("Tags: " + ", ".join(f"{plain(t)} ({n})" for t, n in stats.tags.items()))


def _leaderboard(db: Database) -> None:
    st.subheader("Leaderboard")
    board = leaderboard(ComparisonStore(db).outcomes())
    if not board:
        st.caption(
            "No ranking yet: it needs compare-mode votes between two different model "
            "versions (train an adapter, then compare it with the base)."
        )
        return
    st.dataframe(
        pd.DataFrame(
            [{"version": s.version, "rating": round(s.rating), "95% interval": s.interval_text(),
              "games": s.games, "wins": s.wins} for s in board]
        ),
        hide_index=True, key="leaderboard",
    )
    st.caption("Bradley-Terry strengths on the Elo scale (mean 1000); ties count half. A 95% "
               f"interval is shown once a version has played {MIN_GAMES} games: with fewer, "
               "the ratings are a first guess.")


def _pairs(db: Database, owner: Owner | None) -> None:
    st.subheader("Preference pairs")
    cols = st.columns(2)
    source = cols[0].segmented_control("Source", ["all", "chats", "imports"], default="all", key="pairs_source")
    origin = cols[1].segmented_control("Origin", ORIGIN_FILTERS, default="all", key="pairs_origin",
                                       help="feedback: from chats; imported: hh-rlhf, SQuAD; "
                                            "synthetic: made from the library")
    pairs = list_pairs(db, source=source or "all", limit=50, owner=owner, origin=origin or "all")
    if not pairs:
        st.caption("No pairs yet: regenerate an answer and mark the best, or edit one.")
        return
    for p in pairs:
        label = (f"{p.kind} · {p.origin} · {p.created_at:%Y-%m-%d %H:%M} · "
                 f"{plain(' '.join(p.question.split())[:80])}")
        with st.expander(label):
            st.caption("Chosen")
            st.text(p.chosen)
            for r in p.rejected:
                st.caption("Rejected")
                st.text(r)
            st.button("Delete this pair", key=f"del_pair_{p.kind}_{p.id}", icon=":material/delete:",
                      on_click=delete_pair, args=(db, p.kind, p.id, owner))


def _export(db: Database) -> None:
    st.subheader("Export training data")
    with st.form("export_form"):
        cols = st.columns(4)
        kind = cols[0].selectbox("Kind", KINDS, key="export_kind",
                                 help="preference: DPO / reward model; kto: unpaired thumbs; sft: good answers")
        fmt = cols[1].selectbox("Format", FORMATS, key="export_format",
                                help="jsonl files, or a Hugging Face datasets folder")
        source = cols[2].selectbox("Source", SOURCE_FILTERS, index=SOURCE_FILTERS.index("all"),
                                   key="export_source")
        origin = cols[3].selectbox("Origin", ORIGIN_FILTERS, key="export_origin")
        fraction = st.slider("Test fraction (split by conversation)", 0.0, 0.5, 0.1, 0.05,
                             key="export_test_fraction")
        mask = st.checkbox("Mask e-mail addresses and phone numbers", key="export_mask_pii")
        go = st.form_submit_button("Export", icon=":material/download:")
    if not go:
        return
    out = resources.settings().data_dir / "exports" / f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        result = export(db, kind, ExportOptions(test_fraction=fraction, source=source, origin=origin,
                                                    mask_pii=mask))
        folder = write_export(result, out, fmt)
    except AssistantError as err:
        st.error(error_text(str(err)))  # names the 👍/👎 feedback that makes rows
        return
    st.success(f"Exported to {folder}")
    for line in summarize(result.report):
        st.caption(line)
    if fmt == "jsonl":
        row = st.container(horizontal=True)
        for split in ("train", "test"):
            path = folder / f"{split}.jsonl"
            if path.exists():
                row.download_button(f"{split}.jsonl", path.read_bytes(), file_name=f"{kind}-{split}.jsonl",
                                    mime="application/jsonl", key=f"download_{split}",
                                    on_click="ignore")  # a rerun would hide the other file
