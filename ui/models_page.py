"""The Models page: the trained versions (lineage, data, config, metrics, evaluations, loss
curve), which one the chat answers with (activate through the eval gate, roll back), and
training or evaluation runs in background processes, followed live."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from alignment import runs
from alignment.machine_defaults import has_gpu, size_defaults
from alignment.run_estimate import LONG_S, SHORT_MAX_LENGTH, duration, from_history
from assistant.chat.service import ChatService
from assistant.config import Settings
from assistant.errors import AssistantError
from alignment.training_kinds import KINDS, REWARD, policy_kinds, training_kind
from assistant.registry import Registry, Version, activate_version, gate_report
from assistant.versions import BASE_VERSION, REWARD_KIND
from ui import login, resources
from ui.text import error_text, plain

SELECTED = "models_version"  # the version whose details are shown
_SELECT_NEXT = "_models_select_next"  # a version to select on the next full run
_NOTICE = "_models_notice"  # {place: (level, text)} left by a callback for this run

RUN_REFRESH_S = 2.0
RUNS_SHOWN = 8

#: Config values worth a glance (the whole config is one click further).
CONFIG_KEYS = (
    "trl_config", "algo", "reward_version", "max_steps", "num_train_epochs", "learning_rate",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "lora_r",
    "lora_alpha", "beta", "bf16", "use_cpu", "seed",
)
#: Trainer bookkeeping left out of the metrics table.
NOISE = ("_runtime", "_samples_per_second", "_steps_per_second")
HEADLINE = (("heldout_accuracy", "held-out accuracy"), ("final_reward", "reward"), ("final_loss", "loss"))
STATUS_COLORS = {"queued": "orange", "running": "blue", "done": "green", "failed": "red",
                 "died": "red", "cancelled": "gray"}


def render() -> None:
    st.title("Models")
    if not login.may("train"):  # the page is not in a user's navigation; a stale link
        st.error("Only an admin can train, evaluate and activate model versions.")
        return
    settings = resources.settings()
    registry = resources.registry()
    service = resources.try_chat_service(login.current_user())
    try:
        if service is not None:
            service.sync_version()  # activated elsewhere (a terminal, another tab) since?
        versions = registry.list()
        active = registry.active()
        history = registry.history()
    except AssistantError as err:
        st.error(str(err))
        return
    _in_use(service, registry, versions, active, history)
    if versions:
        _table(versions, active, service)
        _details(settings, registry, service, versions, active)
    else:
        st.info(
            "No trained versions yet: the chat answers with the base model. Collect feedback "
            "first (rate answers with :material/thumb_up: / :material/thumb_down:, regenerate "
            "and mark the best, edit answers, vote in compare mode, or import public pairs with "
            "`assistant data import hh-rlhf FILE`), then train a version below, or run "
            "`assistant train dpo` in a terminal.",
            icon=":material/model_training:",
        )
    _train(settings, versions, active)
    _runs(settings)


# -- notices left by callbacks -----------------------------------------------------------------
def _notify(place: str, level: str, text: str) -> None:
    st.session_state.setdefault(_NOTICE, {})[place] = (level, text)


def _show_notice(place: str) -> None:
    notice = st.session_state.get(_NOTICE, {}).pop(place, None)
    if notice is not None:
        level, text = notice
        {"error": st.error, "success": st.success, "info": st.info}[level](text)


# -- which version answers ---------------------------------------------------------------------
def _in_use(service: ChatService | None, registry: Registry, versions: list[Version], active: str,
            history: list) -> None:
    kinds = {v.name: v for v in versions}
    row = st.container(horizontal=True, vertical_alignment="center")
    what = (f" ({plain(kinds[active].kind)}, from {plain(kinds[active].parent or BASE_VERSION)})"
            if active in kinds else "")
    row.markdown(f"The chat answers with **{plain(active)}**{what}.")
    row.button(
        "Roll back", key="models_rollback", icon=":material/undo:", disabled=not registry.can_rollback(),
        help="Go back to the version that was active before the last activation.",
        on_click=_rollback, args=(registry, service),
    )
    if service is not None and service.version != active:
        st.warning(
            f"{active} is the active version, but this app could not load it and keeps "
            f"answering with {service.version}. {plain(' '.join(service.notices[-1:]))}"
        )
    _show_notice("top")


def _rollback(registry: Registry, service: ChatService | None) -> None:
    if not login.may("activate"):
        return
    before = registry.active()
    try:
        now = registry.rollback()
    except AssistantError as err:
        _notify("top", "error", str(err))
        return
    _switched("top", service, now, f"Rolled back: the chat now answers with {now} (was {before}).")


def _switched(place: str, service: ChatService | None, name: str, message: str) -> None:
    """Switch this app's chat to the now active version (the base model stays loaded; peft
    switches the adapter) and say whether it worked."""
    if service is None:
        _notify(place, "success", message + " It takes effect once the model loads.")
        return
    try:
        now = service.sync_version()
    except AssistantError as err:
        now, reason = service.version, str(err)
    else:
        reason = service.notices[-1] if service.notices else ""
    if now == name:
        _notify(place, "success", message)
    else:
        _notify(place, "error", f"{name} is now the active version, but the chat could not load "
                                f"it and keeps answering with {now}. {reason}")


# -- the list ----------------------------------------------------------------------------------
def headline(metrics: dict) -> str:
    for key, label in HEADLINE:
        value = metrics.get(key)
        if isinstance(value, int | float):
            return f"{label} {value:.3f}"
    return ""


def _table(versions: list[Version], active: str, service: ChatService | None) -> None:
    st.subheader("Versions")
    base_model = service.generator.model_id if service is not None else "the base model"
    # The columns that tell versions apart come first: a phone shows only those.
    rows = [{
        "in use": v.name == active, "version": v.name, "kind": v.kind, "metric": headline(v.metrics),
        "parent": v.parent or "", "rows": str(v.data.get("train_rows", "")),
        "created (UTC)": f"{v.created_at:%Y-%m-%d %H:%M}" if v.created_at else "",
    } for v in reversed(versions)]
    rows.append({"in use": active == BASE_VERSION, "version": BASE_VERSION, "kind": BASE_VERSION, "metric": "",
                 "parent": "", "rows": "", "created (UTC)": ""})
    st.dataframe(
        pd.DataFrame(rows), hide_index=True, key="models_table", height=_fit(len(rows)),
        column_config={
            "in use": st.column_config.CheckboxColumn("in use", width="small",
                                                      help="The version the chat answers with"),
            "rows": st.column_config.TextColumn("rows", help="Training rows"),
            "metric": st.column_config.TextColumn(
                "metric", help="Held-out accuracy (reward models), final reward (RL) or final loss"),
        },
    )
    st.caption(f"base: {plain(base_model)} without an adapter.")


def _fit(rows: int) -> int:
    """A dataframe height that shows every row (the default scrolls after 10)."""
    return 35 * (rows + 1) + 3


# -- one version -------------------------------------------------------------------------------
def _details(settings: Settings, registry: Registry, service: ChatService | None,
             versions: list[Version], active: str) -> None:
    by_name = {v.name: v for v in versions}
    options = [v.name for v in reversed(versions)] + [BASE_VERSION]
    pending = st.session_state.pop(_SELECT_NEXT, None)
    if pending in options:
        st.session_state[SELECTED] = pending
    if st.session_state.get(SELECTED) not in options:
        st.session_state[SELECTED] = options[0]

    def label(name: str) -> str:
        v = by_name.get(name)
        bits = [name, v.kind if v else "the base model"]
        if v and headline(v.metrics):
            bits.append(headline(v.metrics))
        return " · ".join(bits) + ("  (in use)" if name == active else "")

    st.selectbox("Details of", options, format_func=label, key=SELECTED)
    name = st.session_state[SELECTED]
    with st.container(border=True):
        if name == BASE_VERSION:
            model = service.generator.model_id if service is not None else "(not loaded)"
            st.markdown(f"**base**: the base model {plain(model)} without an adapter.")
            _actions(settings, registry, service, None, active)
            return
        v = by_name[name]
        try:
            lineage = " ← ".join(registry.lineage(name))
        except AssistantError as err:
            lineage = f"(unknown: {err})"
        algo = f", {v.config['algo']}" if v.config.get("algo") else ""
        st.markdown(f"**{plain(v.name)}** · {plain(v.kind + algo)}"
                    + (" · :green-badge[in use]" if name == active else ""))
        created = f" · created {v.created_at:%Y-%m-%d %H:%M} UTC" if v.created_at else ""
        st.caption(f"Lineage: {plain(lineage)}{created} · base model {plain(v.base_model)}")
        _actions(settings, registry, service, v, active)
        evaluations = _evaluations_of(registry, name)
        training, evals = st.tabs(["Training", f"Evaluations ({len(evaluations)})"])
        with training:
            _training_details(v)
        with evals:
            _evaluations(v, evaluations)


def _actions(settings: Settings, registry: Registry, service: ChatService | None,
             v: Version | None, active: str) -> None:
    name = v.name if v else BASE_VERSION
    reasons: list[str] = []
    report = None
    if v is not None and v.kind != REWARD_KIND and name != active:
        try:
            report = gate_report(registry, name)
            reasons = report.reasons
        except AssistantError as err:
            reasons = [str(err)]
    row = st.container(horizontal=True, vertical_alignment="center")
    reward = v is not None and v.kind == REWARD_KIND
    row.button(
        f"Activate {name}", key=f"activate_{name}", icon=":material/rocket_launch:",
        type="secondary" if reward else "primary", disabled=service is None or name == active,
        help="Make the chat answer with this version (after the eval gate).",
        on_click=_activate, args=(registry, service, name),
    )
    if reasons:
        row.checkbox(
            "Force (skip the eval gate)", key=f"force_{name}",
            help="Activate even though the evaluation does not show it at least as good as "
                 "the version in use.",
        )
    if v is not None and v.kind in policy_kinds():
        row.button(
            "Evaluate", key=f"evaluate_{name}", icon=":material/query_stats:",
            disabled=name == active,
            help=f"Compare {name} with {active} in the background (reward-model win rate, QA "
                 "accuracy): what the eval gate reads.",
            on_click=_evaluate, args=(settings, name),
        )
    if service is None:
        st.caption("The model did not load (see above), so versions cannot be activated here.")
    elif name == active:
        st.caption(":material/check_circle: The chat answers with this version.")
    elif reward:
        st.caption(":material/info: A reward model scores answers (for online RL and "
                   "evaluations); the chat cannot answer with it.")
    elif reasons:
        st.caption(":material/gpp_maybe: Eval gate refuses: " + plain("; ".join(reasons)) + ".")
    elif v is not None:
        st.caption(f":material/verified: Passes the eval gate against {plain(active)}: better.")
    if report is not None and (report.checked or report.not_checked):
        bits = [f"checked {plain(c)}" for c in report.checked]
        bits += [f"could not check {plain(c)}" for c in report.not_checked]
        st.caption("Eval gate: " + "; ".join(bits) + ".")
    _show_notice("details")


def _activate(registry: Registry, service: ChatService | None, name: str) -> None:
    if service is None or not login.may("activate"):
        return
    force = bool(st.session_state.get(f"force_{name}"))
    before = registry.active()
    try:
        # The engine first: a version it cannot serve (an adapter the server cannot load, a
        # conversion that fails) is refused before it is recorded as active.
        with st.spinner(f"Preparing {name} for the chat's engine..."):
            service.load_version(name)
        activate_version(registry, name, service.base_fingerprint, force=force)
    except AssistantError as err:
        _notify("details", "error", str(err))
        return
    _switched("details", service, name, f"The chat now answers with {name} (was {before}).")


def _evaluate(settings: Settings, name: str) -> None:
    try:
        run = runs.start(settings, ["eval", name], "eval", user=login.current_user())
    except (AssistantError, OSError) as err:
        _notify("details", "error", f"Could not start the evaluation: {err}")
        return
    _notify("details", "info", f"Evaluating {name} in the background (run {run.id}): follow it "
                               "under Runs below.")


def _training_details(v: Version) -> None:
    _headline_metrics(v.metrics)
    d = v.data
    if d:
        st.markdown(
            f"**Data**: {plain(str(d.get('kind', '?')))}, {d.get('train_rows', '?')} training / "
            f"{d.get('test_rows', '?')} held-out rows"
        )
        rows = d.get("rows") or {}
        if rows:
            _row_counts(v.name, rows)
        if d.get("sha256"):
            st.code(f"sha256 {d['sha256']}", language=None)
    shown = {k: v.config[k] for k in CONFIG_KEYS if v.config.get(k) is not None}
    left, right = st.columns(2)
    with left:
        st.markdown("**Config**")
        if shown:
            st.dataframe(_key_values(shown), hide_index=True, key=f"config_{v.name}",
                         height=_fit(len(shown)), column_config=_NAME_VALUE)
    with right:
        if v.curve is not None and v.curve.is_file():
            st.image(str(v.curve), caption=f"{v.name}: loss per step")
        else:
            st.caption("No training curve (the trainer logged no loss).")
    metrics = {k: x for k, x in v.metrics.items()
               if not isinstance(x, dict | list) and not k.endswith(NOISE)}
    with st.expander(f"All metrics ({len(metrics)})"):
        if metrics:
            st.dataframe(_key_values(metrics), hide_index=True, key=f"metrics_{v.name}",
                         height=_fit(len(metrics)), column_config=_NAME_VALUE)
        else:
            st.caption("No metrics recorded.")
    with st.expander("Full config"):
        st.json(v.config, expanded=True)


def _row_counts(name: str, rows: dict) -> None:
    """Rows given, used, dropped and why, and seen by the run: training and held-out."""
    long_rows = f"over {rows['max_length']} tokens" if rows.get("max_length") else "too long"
    table = pd.DataFrame([
        {"split": "training", "given": rows.get("train_given"), "used": rows.get("train_used"),
         "prompt shortened": rows.get("train_truncated"), f"dropped ({long_rows})": rows.get("train_dropped_too_long"),
         "seen by the run": rows.get("train_seen")},
        {"split": "held-out", "given": rows.get("heldout_given"), "used": rows.get("heldout_used"),
         "prompt shortened": rows.get("heldout_truncated"),
         f"dropped ({long_rows})": rows.get("heldout_dropped_too_long"), "seen by the run": None},
    ])
    st.dataframe(table, hide_index=True, key=f"rows_{name}", height=_fit(2))
    if rows.get("export_rows_in") is not None:
        st.caption(f"Export: {rows['export_rows_in']} rows built; dropped {rows.get('dropped_empty', 0)} "
                   f"empty, {rows.get('dropped_identical', 0)} with identical answers, "
                   f"{rows.get('dropped_duplicate', 0)} duplicates. Over-long rows: "
                   f"{plain(str(rows.get('long_rows', '')))}.")


def _headline_metrics(m: dict) -> None:
    """The few numbers that say how training went, first to last."""
    def number(key: str) -> float | None:
        x = m.get(key)
        return float(x) if isinstance(x, int | float) else None

    row = st.container(horizontal=True, gap="medium")
    if number("steps") is not None:
        row.metric("Steps", f"{int(m['steps'])}", width="content")
    if number("final_loss") is not None:
        first = number("first_loss")
        row.metric("Loss", f"{m['final_loss']:.4f}", width="content", delta_color="inverse",
                   delta=f"{m['final_loss'] - first:+.4f} from {first:.4f}" if first is not None else None)
    if number("heldout_accuracy") is not None:
        interval = (f"95% CI {m['heldout_accuracy_low']:.1%}-{m['heldout_accuracy_high']:.1%}, "
                    f"n={m.get('heldout_rows')}" if number("heldout_accuracy_low") is not None else None)
        row.metric("Held-out accuracy", f"{m['heldout_accuracy']:.1%}", width="content",
                   delta=interval, delta_color="off", delta_arrow="off")
    if number("heldout_margin") is not None:
        row.metric("Held-out margin", f"{m['heldout_margin']:.3f}", width="content",
                   delta=f"95% CI {m['heldout_margin_low']:.3f} to {m['heldout_margin_high']:.3f}",
                   delta_color="off", delta_arrow="off",
                   help="How much more the version prefers the chosen answer than its parent does "
                        "(DPO's implicit reward), on the held-out pairs; 0 before training.")
    if number("final_reward") is not None:
        first = number("first_reward")
        row.metric("Reward", f"{m['final_reward']:.3f}", width="content",
                   delta=f"{m['final_reward'] - first:+.3f} from {first:.3f}" if first is not None else None)
    if number("train_seconds") is not None:
        row.metric("Training time", duration(m["train_seconds"]), width="content")
    if number("total_seconds") is not None:
        phases = " · ".join(f"{k} {duration(x)}" for k, x in (m.get("phase_seconds") or {}).items())
        row.metric("Total time", duration(m["total_seconds"]), width="content",
                   help=f"The whole run: {phases}" if phases else None)
    if number("trained_tokens_per_s") is not None and number("padding_share") is not None:
        row.metric("Trained tokens/s", f"{m['trained_tokens_per_s']:.0f}", width="content",
                   delta=f"{m['padding_share']:.0%} padding", delta_color="off", delta_arrow="off")


_NAME_VALUE = {"name": st.column_config.TextColumn(width="medium"),
               "value": st.column_config.TextColumn(width="medium")}


def _key_values(values: dict) -> pd.DataFrame:
    def show(x: object) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    return pd.DataFrame({"name": list(values), "value": [show(x) for x in values.values()]})


def _evaluations_of(registry: Registry, name: str) -> list:
    try:
        return registry.evaluations(name)
    except AssistantError as err:
        st.error(str(err))
        return []


def _evaluations(v: Version, evaluations: list) -> None:
    if not evaluations:
        st.caption(f"Not evaluated yet: press Evaluate (or run `assistant eval {plain(v.name)}`).")
        return
    from alignment.eval_metrics import table, verdict_text

    for i, e in enumerate(reversed(evaluations)):
        st.caption(f"{e.created_at:%Y-%m-%d %H:%M} UTC · candidate {plain(e.candidate)} against "
                   f"baseline {plain(e.baseline)}"
                   + (f" · judged by {plain(e.reward_model)}" if e.reward_model else " · no reward model"))
        try:
            rows = table(e)
            st.markdown(f"**Verdict**: {plain(verdict_text(e.metrics))}")
        except (KeyError, TypeError, ValueError):  # an older or partial record
            rows = []
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"eval_{v.name}_{i}",
                         height=_fit(len(rows)),
                         column_config={"note": st.column_config.TextColumn(width="large")})
        else:
            st.json(e.metrics, expanded=False)
        for note in e.metrics.get("notes") or []:
            st.caption(plain(str(note)))
        examples = e.metrics.get("examples") or []
        if examples:
            with st.expander(f"Example answers ({len(examples)})"):
                for ex in examples:
                    st.caption("Prompt")
                    st.text(str(ex.get("prompt", "")))
                    left, right = st.columns(2)
                    left.caption(plain(v.name))
                    left.text(str(ex.get("candidate", "")))
                    right.caption(plain(e.baseline))
                    right.text(str(ex.get("baseline", "")))
        if i < len(evaluations) - 1:
            st.divider()


# -- training ----------------------------------------------------------------------------------
def _train(settings: Settings, versions: list[Version], active: str) -> None:
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
    st.button("Start training", key="train_start", icon=":material/play_arrow:", disabled=not ready,
              help="Runs `assistant " + " ".join(args) + "` in a background process: the chat "
                   "keeps answering meanwhile.",
              on_click=_start_training, args=(settings, args, kind))
    _show_notice("train")


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


def _start_training(settings: Settings, args: list[str], kind: str) -> None:
    missing = _missing_data(kind)  # the data may have changed since the form was shown
    if missing:
        _notify("train", "error", error_text(missing))
        return
    try:
        run = runs.start(settings, args, kind, user=login.current_user())
    except (AssistantError, OSError) as err:
        _notify("train", "error", f"Could not start training: {err}")
        return
    if run.status == "queued":
        _notify("train", "info", f"Queued {kind} training (run {run.id}): it starts when the "
                                 "running one ends. Follow it under Runs below.")
    else:
        _notify("train", "info", f"Started {kind} training (run {run.id}): follow it under Runs below.")


# -- runs --------------------------------------------------------------------------------------
def _runs(settings: Settings) -> None:
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
                st.session_state[_SELECT_NEXT] = run.version
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
