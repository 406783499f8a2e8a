"""The Models page: the trained versions (lineage, data, config, metrics, evaluations, loss
curve), which one the chat answers with (activate through the eval gate, roll back), and
training or evaluation runs in background processes, followed live."""

from __future__ import annotations


import pandas as pd
import streamlit as st

from alignment import runs
from alignment.run_estimate import duration
from assistant.chat.service import ChatService
from assistant.config import Settings
from assistant.errors import AssistantError
from alignment.training_kinds import REWARD, policy_kinds
from assistant.gate import activate_version, gate_report
from assistant.registry import CALIBRATION, Registry, Version
from assistant.versions import BASE_VERSION, chats
from ui import login, resources
from ui.models_state import SELECT_NEXT, SELECTED, notify, show_notice
from ui.runs_panel import runs_panel
from ui.train_form import train_form
from ui.text import plain



#: Config values worth a glance (the whole config is one click further).
CONFIG_KEYS = (
    "trl_config", "algo", "reward_version", "max_steps", "num_train_epochs", "learning_rate",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "lora_r",
    "lora_alpha", "beta", "bf16", "use_cpu", "seed",
)
#: Trainer bookkeeping left out of the metrics table.
NOISE = ("_runtime", "_samples_per_second", "_steps_per_second")
HEADLINE = (("heldout_accuracy", "held-out accuracy"), ("final_reward", "reward"), ("final_loss", "loss"))


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
    train_form(settings, versions, active)
    runs_panel(settings)


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
    show_notice("top")


def _rollback(registry: Registry, service: ChatService | None) -> None:
    if not login.may("activate"):
        return
    before = registry.active()
    try:
        now = registry.rollback()
    except AssistantError as err:
        notify("top", "error", str(err))
        return
    _switched("top", service, now, f"Rolled back: the chat now answers with {now} (was {before}).")


def _switched(place: str, service: ChatService | None, name: str, message: str) -> None:
    """Switch this app's chat to the now active version (the base model stays loaded; peft
    switches the adapter) and say whether it worked."""
    if service is None:
        notify(place, "success", message + " It takes effect once the model loads.")
        return
    try:
        now = service.sync_version()
    except AssistantError as err:
        now, reason = service.version, str(err)
    else:
        reason = service.notices[-1] if service.notices else ""
    if now == name:
        notify(place, "success", message)
    else:
        notify(place, "error", f"{name} is now the active version, but the chat could not load "
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
    pending = st.session_state.pop(SELECT_NEXT, None)
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
    if v is not None and chats(v.kind) and name != active:
        try:
            report = gate_report(registry, name)
            reasons = report.reasons
        except AssistantError as err:
            reasons = [str(err)]
    row = st.container(horizontal=True, vertical_alignment="center")
    judge = v is not None and not chats(v.kind)  # a reward model or an answerability head
    row.button(
        f"Activate {name}", key=f"activate_{name}", icon=":material/rocket_launch:",
        type="secondary" if judge else "primary", disabled=service is None or name == active,
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
    elif judge and v.kind == REWARD:
        st.caption(":material/info: A reward model scores answers (for online RL and "
                   "evaluations); the chat cannot answer with it.")
    elif judge:
        st.caption(":material/info: An answerability head tells whether the top source answers a "
                   "question (quoted mode abstains by it); the chat cannot answer with it.")
    elif reasons:
        st.caption(":material/gpp_maybe: Eval gate refuses: " + plain("; ".join(reasons)) + ".")
    elif v is not None:
        st.caption(f":material/verified: Passes the eval gate against {plain(active)}: better.")
    if report is not None and (report.checked or report.not_checked):
        bits = [f"checked {plain(c)}" for c in report.checked]
        bits += [f"could not check {plain(c)}" for c in report.not_checked]
        st.caption("Eval gate: " + "; ".join(bits) + ".")
    show_notice("details")


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
        notify("details", "error", str(err))
        return
    _switched("details", service, name, f"The chat now answers with {name} (was {before}).")


def _evaluate(settings: Settings, name: str) -> None:
    try:
        run = runs.start(settings, ["eval", name], "eval", user=login.current_user())
    except (AssistantError, OSError) as err:
        notify("details", "error", f"Could not start the evaluation: {err}")
        return
    notify("details", "info", f"Evaluating {name} in the background (run {run.id}): follow it "
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
    calibrated = m.get(CALIBRATION)
    if isinstance(calibrated, dict) and isinstance(calibrated.get("min_abstain_probability"), int | float):
        row.metric("Abstention threshold", f"{calibrated['min_abstain_probability']:g}", width="content",
                   delta=f"calibrated on {calibrated.get('asked')} questions", delta_color="off",
                   delta_arrow="off",
                   help="`assistant models calibrate`: the version's own answers.min_abstain_probability, "
                        f"chosen on {calibrated.get('questions')}; the chat uses it while the setting is unset.")
    head = m.get("answerability")
    if isinstance(head, dict) and isinstance(head.get("threshold"), int | float):
        chosen = calibrated if isinstance(calibrated, dict) and "head_threshold" in calibrated else head
        value = chosen["head_threshold"] if chosen is calibrated else head["threshold"]
        row.metric("Head threshold", f"{value:.3g}", width="content",
                   delta=f"AUC {chosen.get('auc')} on {chosen.get('asked') or chosen.get('heldout')} questions",
                   delta_color="off", delta_arrow="off",
                   help="An answerability head: quoted mode answers \"The documents do not say.\" when it gives "
                        "the top source at least this probability of not answering (chosen by its training on "
                        "held-out examples, or by `assistant models calibrate`).")


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


