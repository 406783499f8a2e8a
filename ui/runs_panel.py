"""The Models page's list of training and evaluation runs: status, progress, estimate and
cancel, refreshed only while something runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import streamlit as st

from alignment import runs
from alignment.run_estimate import LONG_S, duration
from assistant.config import Settings
from ui.models_state import SELECT_NEXT
from ui.text import error_text, plain

RUN_REFRESH_S = 2.0
RUNS_SHOWN = 8
STATUS_COLORS = {"queued": "orange", "running": "blue", "done": "green", "failed": "red",
                 "died": "red", "cancelled": "gray"}


def runs_panel(settings: Settings) -> None:
    """The runs, newest first; the panel refreshes every RUN_REFRESH_S while one runs."""
    st.subheader("Runs")
    running = {r.id for r in runs.list_runs(settings) if r.status in ("running", "queued")}
    # Refresh only this panel, and only while something runs: the rest of the page (and the
    # chat, in other tabs) stays usable, and an idle page does no polling.
    panel = st.fragment(_runs_panel, run_every=RUN_REFRESH_S if running else None)
    panel(settings, frozenset(running))


def _runs_panel(settings: Settings, running_at_start: frozenset[str]) -> None:
    listed = runs.list_runs(settings)
    running = {r.id for r in listed if r.status in ("running", "queued")}
    if running_at_start - running:
        # A run ended: rerun the whole page, to list the version it registered and to stop
        # refreshing when nothing runs any more.
        st.rerun(scope="app")
    if not listed:
        st.caption("No runs yet: start one above. Runs from the command line do not show here.")
        return
    for run in listed[:RUNS_SHOWN]:
        _run(settings, run)
    if len(listed) > RUNS_SHOWN:
        st.caption(f"{len(listed) - RUNS_SHOWN} older runs are in {plain(str(settings.runs_dir))}.")


def _run(settings: Settings, run: runs.Run) -> None:
    with st.container(border=True):
        head = st.container(horizontal=True, vertical_alignment="center")
        if run.kind == "eval":
            title = f"Evaluation of {run.args[1] if len(run.args) > 1 else '?'}"
        else:
            title = f"{run.kind} training"
        head.markdown(f"**{plain(title)}**")
        head.badge(run.status, color=STATUS_COLORS.get(run.status, "gray"))
        started = datetime.fromtimestamp(run.started, UTC) if run.started else None
        when = f"started {started:%Y-%m-%d %H:%M} UTC · " if started else ""
        st.caption(when + plain("assistant " + " ".join(run.args)))
        if run.status == "queued":
            st.caption(f":material/hourglass_top: Waits for the running run to end (at most "
                       f"{settings.max_concurrent_runs} at once: ASSISTANT_MAX_CONCURRENT_RUNS).")
        if run.status in ("running", "queued"):
            if run.status == "running":
                _progress(run)
            st.button("Cancel", key=f"cancel_run_{run.id}", icon=":material/cancel:",
                      on_click=runs.cancel, args=(run,))
        elif run.status == "done" and run.version:
            if _times(run):
                st.caption(":material/timer: " + _times(run))
            what = "evaluated" if run.kind == "eval" else "registered"
            head.markdown(f":material/check_circle: {what} **{plain(run.version)}**")
            if head.button(f"Show {run.version}", key=f"show_run_{run.id}",
                           help="Show this version's details above"):
                st.session_state[SELECT_NEXT] = run.version
                st.rerun(scope="app")
        elif run.error:
            (st.warning if run.status == "cancelled" else st.error)(error_text(run.error))
        with st.expander("Log"):
            st.code(run.log_tail(40) or "(nothing logged yet)", language=None)


def _progress(run: runs.Run) -> None:
    """The run's current phase with its own progress bar and estimate, then every phase's
    time so far and the estimate of the whole run (after its first step)."""
    p = run.progress
    now = time.time()
    elapsed = f" · {duration(now - run.started)} elapsed" if run.started else ""
    phase = p.get("phase")
    if phase is None or phase == "done":
        if run.kind == "eval":
            text = "Evaluating: both versions answer the held-out prompts"
        elif phase == "done":
            text = "Finishing: writing the result"
        else:
            text = "Starting: the process loads Python and the training libraries"
        st.progress(0 if phase is None else 1.0, text=text + elapsed)
        return
    # progress.json is written once a step (which can take minutes) or once a batch: the
    # phase's time counts from its start, its ETA from the moment the file was written.
    since = now - p["updated"] if isinstance(p.get("updated"), int | float) else 0.0
    phases = p.get("phases") or {}
    started = (phases.get(phase) or {}).get("started")
    bits = [f"{p.get('label') or phase}"]
    if p.get("detail"):
        bits[0] += f": {p['detail']}"
    total, done = p.get("total"), p.get("done") or 0
    if phase == "training" and p.get("max_steps"):
        bits.append(f"step {p.get('step', 0)}/{p['max_steps']}")
        if isinstance(p.get("loss"), int | float):
            bits.append(f"loss {p['loss']:.4f}")
    elif total and phase == "evaluating":
        bits.append(f"batch {done}/{total}")
    if isinstance(started, int | float):
        bits.append(f"{duration(now - started)} in this phase")
    if isinstance(p.get("phase_eta_s"), int | float):
        bits.append(f"about {duration(max(0.0, p['phase_eta_s'] - since))} left")
    if run.started:
        bits.append(f"{duration(now - run.started)} in all")
    fraction = min(1.0, done / total) if total else 0.0
    st.progress(fraction, text=" · ".join(bits))
    names = list(phases)
    done_text = [f"{name} {duration(x['seconds'])}" for name, x in phases.items()
                 if isinstance(x.get("seconds"), int | float)]
    if done_text or len(names) > 1:
        st.caption("Phases: " + " · ".join(done_text + [f"{phase} (now)"]))
    estimate = p.get("estimate")
    if estimate:
        held = (f", held-out evaluation about {duration(estimate['eval_s'])} ({estimate['eval_rows']} rows)"
                if estimate.get("eval_rows") else "")
        st.caption(f":material/timer: Estimate from the first step ({estimate['first_step_s']:.1f} s): "
                   f"training about {duration(estimate['train_s'])} ({estimate['steps']} steps){held}; "
                   f"about {duration(estimate['total_s'])} in all.")
        smaller = estimate.get("smaller") or {}
        if smaller:
            offer = f"Steps {smaller['steps']}"
            if smaller.get("max_length"):
                offer += f" (in a terminal: --max-length {smaller['max_length']})"
            st.warning(f"That is long for this machine. For about {duration(LONG_S)}: cancel and start "
                       f"again with {offer}. Nothing is registered by a cancelled run.",
                       icon=":material/timer:")


def _times(run: runs.Run) -> str:
    """'training time X, total time Y (loading ..., ...)' of an ended run (empty: unknown)."""
    phases = {k: x.get("seconds") for k, x in (run.progress.get("phases") or {}).items()}
    phases = {k: x for k, x in phases.items() if isinstance(x, int | float)}
    if not phases:
        return ""
    total = (run.ended - run.started) if run.ended and run.started else sum(phases.values())
    parts = " · ".join(f"{k} {duration(x)}" for k, x in phases.items())
    return (f"Training time {duration(phases.get('training', 0.0))}, total time {duration(total)} "
            f"({parts})")
