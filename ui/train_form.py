"""The Models page's form that starts a training run: the kind (from the table of kinds),
its options, the data it would get checked before it starts, and the estimate of how long
it will take; the run itself is a background process (:mod:`alignment.runs`)."""

from __future__ import annotations

import streamlit as st

from alignment import memory, runs
from alignment.machine_defaults import has_gpu, size_defaults
from alignment.run_estimate import LONG_S, SHORT_MAX_LENGTH, duration, from_history
from assistant.config import Settings
from assistant.errors import AssistantError
from alignment.training_kinds import KINDS, REWARD, policy_kinds, training_kind
from assistant.registry import Version
from assistant.versions import BASE_VERSION
from ui import login, resources
from ui.models_state import notify, show_notice
from ui.text import error_text, plain


def train_form(settings: Settings, versions: list[Version], active: str) -> None:
    """The form: kind, steps, batch, learning rate, held-out rows, parent, algorithm and judge;
    the missing data or the estimate; the button that starts (or queues) the run."""
    st.subheader("Train a new version")
    sizes = size_defaults()
    kinds = list(KINDS)
    cols = st.columns(3)
    kind = cols[0].selectbox("Kind", kinds, key="train_kind")
    steps = cols[1].number_input("Steps", 1, 100_000, 50, 10, key="train_steps",
                                 help="Optimizer steps; each sees 'batch size' x "
                                      f"{sizes['gradient_accumulation_steps']} rows (gradient accumulation).")
    batch = cols[2].number_input("Batch size", 1, 512, sizes["per_device_train_batch_size"], 1,
                                 key="train_batch_size")
    spec = training_kind(kind)
    st.caption(error_text(spec.help))
    cols = st.columns(3)
    lr = cols[0].number_input("Learning rate", min_value=0.0, max_value=1.0, value=None, step=1e-5,
                              format="%g", key="train_lr", placeholder="the kind's default",
                              help="Empty: the kind's default (5e-5 for LoRA; 1e-5 for RL).")
    args = ["train", kind, "--steps", str(int(steps)), "--batch-size", str(int(batch))]
    if lr:
        args += ["--lr", f"{lr:g}"]
    eval_rows = 0
    if not spec.online:
        eval_rows = int(st.number_input(
            "Held-out rows", 0, 100_000, sizes["eval_rows"], 8, key="train_eval_rows",
            help="Held-out rows evaluated after training (accuracy on rows the run did not "
                 f"see). Default sized for this machine: {sizes['eval_rows']} "
                 f"({'GPU' if has_gpu() else 'CPU'}); 0: none."))
        args += ["--eval-rows", str(eval_rows)]
    ready = True
    if not spec.reward:
        parents = [BASE_VERSION] + [v.name for v in reversed(versions) if v.kind in policy_kinds()]
        start = parents.index(active) if active in parents else 0
        parent = cols[1].selectbox("Start from", parents, index=start, key="train_parent",
                                   help="The version whose adapter training continues (base: a new one).")
        args += ["--parent", parent]
    if len(spec.algorithms) > 1:
        algo = cols[2].selectbox("Algorithm", list(spec.algorithms), key="train_algo",
                                 help=f"TRL's trainers for {kind}.")
        args += ["--algo", algo]
    if spec.online:
        judges = [v.name for v in reversed(versions) if v.kind == REWARD]
        if judges:
            judge = st.selectbox("Reward model", judges, key="train_reward")
            args += ["--reward", judge]
        else:
            ready = False
            st.warning(f"Kind {kind} needs a reward model to judge its samples: train one with kind "
                       f"'{REWARD}' first.")
    missing, rows = _data_check_cached(kind, settings.resolved_database_url)
    if missing:
        ready = False
        st.warning(error_text(missing), icon=":material/dataset:")
    else:
        per_step = int(batch) * sizes["gradient_accumulation_steps"]
        _estimate_note(kind, versions, min(int(steps) * per_step, rows), eval_rows, per_step)
        _memory_note(settings, kind, int(batch))
    st.button("Start training", key="train_start", icon=":material/play_arrow:", disabled=not ready,
              help="Runs `assistant " + " ".join(args) + "` in a background process: the chat "
                   "keeps answering meanwhile.",
              on_click=_start_training, args=(settings, args, kind, {"per_device_train_batch_size": int(batch)}))
    show_notice("train")


def _estimate_note(kind: str, versions: list[Version], rows: int, eval_rows: int, per_step: int) -> None:
    """How long the run should take, at the pace the last run of the same kind measured, and
    the smaller setting when that is long. The run itself measures its first step and
    shows its own estimate under Runs."""
    last = next((v for v in reversed(versions) if v.kind == kind and v.metrics.get("train_seconds_per_row")),
                None)
    estimate = from_history(last.metrics if last else None, rows, eval_rows)
    if estimate is None:
        st.caption(f":material/timer: No estimate yet: no earlier {plain(kind)} run here has measured "
                   "its pace. The run measures its first step and shows its estimate under Runs.")
        return
    pace = float(last.metrics["train_seconds_per_row"])
    held = f", held-out evaluation about {duration(estimate.eval_s)}" if eval_rows else ""
    st.caption(f":material/timer: Estimate: training about {duration(estimate.train_s)} ({rows} rows){held}; "
               f"at the pace of {plain(last.name)}, the last {plain(kind)} run ({pace:.2f} s per training row "
               f"at max length {last.config.get('max_length', '?')}).")
    if estimate.train_s > LONG_S:
        fit = max(1, int(LONG_S / (pace * per_step)))
        st.warning(f"That is long for this machine. For about {duration(LONG_S)}: Steps {fit} "
                   f"(or `assistant train {plain(kind)} --steps {fit} --max-length {SHORT_MAX_LENGTH}` "
                   "in a terminal).", icon=":material/timer:")


def _memory_note(settings: Settings, kind: str, batch: int) -> None:
    """The run's memory estimate against the memory free now; over it, the batch size that
    fits (the click re-checks: :func:`alignment.runs.start`)."""
    estimate = memory.run_estimate(settings, kind, {"per_device_train_batch_size": batch})
    free = memory.available()
    if estimate is None or free is None:
        return
    text = f"{estimate.against(free)} now."
    if estimate.need <= free:
        st.caption(f":material/memory: {text}")
    else:
        st.warning(f"{text} It would not start. {estimate.advice(free)}", icon=":material/memory:")


@st.cache_data(ttl=10, show_spinner=False)
def _data_check_cached(kind: str, database_url: str) -> tuple[str | None, int]:
    # Exporting all the feedback takes ~1 s with a thousand pairs: not on every rerun of the
    # page. The click re-checks uncached, so a stale answer never starts a run.
    return _data_check(kind)


def _missing_data(kind: str) -> str | None:
    """Why a ``kind`` run would stop at once for want of data (None: it has enough), found
    before it starts: a run only gets there after loading the model."""
    return _data_check(kind)[0]


def _data_check(kind: str) -> tuple[str | None, int]:
    """(why a ``kind`` run would stop for want of data or None, its training rows)."""
    from alignment.readiness import check_data

    try:
        return None, check_data(resources.database(), kind)
    except AssistantError as err:
        return str(err), 0


def _start_training(settings: Settings, args: list[str], kind: str, sizes: dict) -> None:
    missing = _missing_data(kind)  # the data may have changed since the form was shown
    if missing:
        notify("train", "error", error_text(missing))
        return
    try:
        run = runs.start(settings, args, kind, user=login.current_user(), sizes=sizes)
    except (AssistantError, OSError) as err:
        notify("train", "error", f"Could not start training: {err}")
        return
    if run.status == "queued":
        notify("train", "info", f"Queued {kind} training (run {run.id}): it starts when the "
                                 "running one ends. Follow it under Runs below.")
    else:
        notify("train", "info", f"Started {kind} training (run {run.id}): follow it under Runs below.")
