"""Rollout: a candidate version beside production, as the fastai book's "How to avoid disaster" lays it out:
shadow (it scores every request, never shown), limited (it answers a share), expanded (it becomes production),
with the comparison on the same requests, the disagreements as images, and a gate whose criteria are visible."""

import pandas as pd
import streamlit as st

from core.drivetrain import accepted
from core.errors import UserError
from core.model import registry
from core.model.rates import points
from core.production import backtest, backtest_jobs, gate, rollout
from ui.common import attempt, current_workspace, image_grid, job_progress, log_settled, rate_metric, table

ws = current_workspace()
log_settled(ws)  # what this app just scored is in the log before the page reads it
st.title("Rollout")
st.caption(
    "Run a new version in **shadow** first: it scores every request beside production and is never shown or acted on. "
    "Then let it answer a **limited** share of requests (chosen by image hash, so an image always goes the same way), "
    "and **expand** it to production when the gate is met; rollback stays one click away. Every step is recorded with "
    "the figures shown when it was taken."
)
if message := st.session_state.pop("rollout_message", None):
    st.success(message)
production = registry.production_version(ws)
if production is None:
    st.info("No production model yet: train one and promote it on the **Train** page, then run candidates beside it.")
    st.stop()
active = rollout.current(ws)
others = [v for v in registry.list_versions(ws)["version"].tolist()[::-1] if v != production]


@st.fragment(run_every=1.0)
def backtest_progress() -> None:
    """The running backtest's progress, refreshed every second; the whole page again once it has ended."""
    job = backtest_jobs.current(ws)
    job_progress(
        job,
        lambda done, total, message: (
            f"Replaying the last {job.days} day(s) through {job.version}: {done:,}/{total:,} · {message}"
        ),
    )


def start_backtest() -> None:
    """The Backtest button's callback: it runs as the click arrives, before the page's script, so a page run cut
    short cannot lose the click."""
    try:
        backtest_jobs.start(ws, st.session_state["backtest_version"], int(st.session_state["backtest_days"]))
    except UserError as exc:  # one already runs (starting a thread touches no disk)
        st.session_state["backtest_refused"] = str(exc)


def backtest_section(versions: list[str]) -> None:
    """Replay the kept production images of a period through a version, before it runs in shadow: in the
    background (a long period holds no page), its result shown here once it has ended."""
    key = f"backtest_result_{ws.name}"  # per workspace: another's v1 is another model
    if (ended := backtest_jobs.current(ws)) is not None and not ended.running:
        backtest_jobs.forget(ws)
        if ended.error:
            st.session_state["backtest_refused"] = f"Backtest of {ended.version}: {ended.error}"
        else:
            st.session_state[key] = ended.result
    found = st.session_state.get(key)
    running = (job := backtest_jobs.current(ws)) is not None and job.running
    label = "Backtest before shadow: replay the kept production images through a version"
    with st.expander(label, expanded=found is not None or running, key="backtest_expander"):  # a key: open across reruns
        if refused := st.session_state.pop("backtest_refused", None):
            st.error(refused)
        if running:
            backtest_progress()
            return
        c1, c2 = st.columns(2)
        version = c1.selectbox("Version", versions, key="backtest_version")
        c2.number_input("Days of production to replay", 1, 365, 7, key="backtest_days")
        st.button(f"Backtest {version}", key="backtest_run", on_click=start_backtest)
        if found is None or found.version != version:
            st.caption("Scored as the serving path would, under the version's accepted policy; stored as 'backtest', "
                       "never served, never counted by Monitor, Review or the comparison below.")  # fmt: skip
            return
        st.markdown(
            f"**{found.replayed} of {found.period}** served predictions of the last {found.days} day(s) replayed; "
            f"{found.not_kept} could not be (their image was not kept: Predict's deployment settings keep every image)."
        )
        m1, m2, m3 = st.columns(3)
        rate_metric(m1, "Same class as production", found.agreement, "–")
        rate_metric(m2, "Same action", found.same_action, "–")
        m3.metric("Actions that would change", f"{len(found.changed):,}")
        st.markdown(
            f"- {backtest.words(found.labelled, 'On labelled requests, mostly the hard cases the queue collects')}\n"
            f"- {backtest.words(found.audited, 'On the audit sample (random: the one to believe)')}"
        )
        if found.utility_n:
            u = found.utility
            st.caption(f"Utility per labelled request ({found.utility_n}), each under its own policy: production "
                       f"{u['production']:+.2f}, {found.version} {u['candidate']:+.2f}.")  # fmt: skip
        kept = found.changed[found.changed["image_path"].notna()].head(12)
        if len(kept):
            captions = [f"{r.production_action} → {r.candidate_action}" for r in kept.itertuples()]
            image_grid([ws.root / p for p in kept["image_path"]], captions, columns=4)


def limited_controls(key: str, scope: rollout.Scope) -> rollout.Scope:
    c1, c2, c3 = st.columns(3)
    share = c1.slider("Share of requests it answers", 0.01, 1.0, scope.share or 0.1, 0.01, key=f"{key}_share")
    floor = c2.slider("Only at this confidence or above", 0.0, 1.0, scope.min_confidence, 0.05, key=f"{key}_conf")
    in_domain = c3.checkbox("Only on in-domain inputs", scope.in_domain_only, key=f"{key}_domain")
    return rollout.Scope(float(share), float(floor), bool(in_domain))


if active is None:
    st.subheader(f"Production {production} answers every request")
    if not others:
        st.info("Train another version on the **Train** page to run it beside production.")
    else:
        candidate = st.selectbox("Candidate version", others, key="rollout_candidate")
        stage = st.radio("Stage", ["shadow", "limited"], horizontal=True, key="rollout_stage")
        scope = limited_controls("rollout_start", rollout.Scope()) if stage == "limited" else rollout.Scope()
        note = st.text_input("Why (recorded with the decision)", key="rollout_start_note")
        if st.button(f"Start {candidate} in {stage}", type="primary", key="rollout_start"):
            attempt(lambda: rollout.start(ws, candidate, stage, scope, note=note))
            st.session_state["rollout_message"] = f"{candidate} is in {stage} beside {production}."
            st.rerun()
    if st.button("Roll back production to the version before it", key="rollout_back_production"):
        result = attempt(lambda: rollout.rollback(ws))
        st.session_state["rollout_message"] = f"Production is {result['production']} again."
        st.rerun()
else:
    where = f"answers {active.scope.words()}" if active.stage == "limited" else "scores every request; never shown or acted on"
    st.subheader(f"Candidate {active.candidate} in {active.stage} beside production {production}")
    st.caption(f"Since {active.since:%Y-%m-%d %H:%M}; it {where}.")
    if accepted.active(ws, active.candidate) is None:
        st.warning(
            f"{active.candidate} has no accepted decision policy: where it answers (limited, or after expanding) its "
            "action is its top class and nothing is referred to a person."
        )
        if st.button(f"Accept the optimizer's policy for {active.candidate} (the current utility matrix)", key="rollout_policy"):
            attempt(lambda: accepted.accept_optimized(ws, active.candidate))
            st.session_state["rollout_message"] = f"Accepted a policy for {active.candidate} (see Policy after expanding)."
            st.rerun()
    window = st.segmented_control("Window", ["hour", "day", "week"], default="day", key="rollout_window") or "day"
    comparison = attempt(lambda: gate.compare(ws, active.candidate, window=window))
    acc = comparison.accuracy
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Scored by both", f"{comparison.paired:,}")
    rate_metric(m2, "Agreement", comparison.agreement_rate, "–")
    m3.metric("Labelled (feedback, reviews)", f"{acc.labelled:,}")
    m4.metric("Accuracy, candidate − production", "–" if acc.difference is None else f"{points(acc.difference)} points")
    if acc.low is not None:
        m4.caption(
            f"95% interval {points(acc.low)} to {points(acc.high)} points, from the {acc.disputed_labelled} labelled "
            f"of the {acc.disputed} request(s) the two answered differently (where they agree, the difference is 0)"
        )
    if acc.production_interval and acc.candidate_interval:
        m3.caption(
            f"Candidate {acc.candidate_interval.text()}; production {acc.production_interval.text()}: each label weighted "
            "by how it was chosen (the hard cases, and the audit's random sample of the rest)."
        )
    checks = gate.gate(comparison)
    st.markdown("**Promotion gate: " + ("met**" if checks.passed else "not met yet**"))
    table(pd.DataFrame([{"met": "yes" if c.met else "not yet", "criterion": c.criterion, "now": c.value} for c in checks.checks]))
    if comparison.paired:
        st.plotly_chart(gate.comparison_figure(comparison), key="rollout_comparison")
        with st.expander(f"Per {window}: agreement, accuracy of each on the same labelled requests, and the difference"):
            st.dataframe(
                gate.windows_table(comparison),
                hide_index=True,
                width="stretch",
            )
    differ = gate.disagreements(comparison)
    st.markdown(f"**Latest disagreements** ({len(differ)} shown; the images are kept for the review queue)")
    kept = differ[differ["image_path"].notna()]
    if kept.empty:
        st.write("None yet.")
    else:
        captions = [f"production {r.production_label} · candidate {r.candidate_label}" for r in kept.itertuples()]
        image_grid([ws.root / p for p in kept["image_path"]], captions, columns=4)

    st.divider()
    note = st.text_input("Why (recorded with the decision and the figures above)", key="rollout_note")
    figures = gate.figures(comparison, checks)
    st.markdown("**Limited**: let it answer a share of requests (production answers the rest)")
    scope = limited_controls("rollout_limited", active.scope if active.stage == "limited" else rollout.Scope())
    if st.button("Let it answer this share", key="rollout_limit"):
        attempt(lambda: rollout.start(ws, active.candidate, "limited", scope, figures, note))
        st.session_state["rollout_message"] = f"{active.candidate} now answers {scope.words()}."
        st.rerun()
    left, right = st.columns(2)
    with left:
        st.markdown("**Expand**: it becomes production")
        anyway = True
        if not checks.passed:
            anyway = st.checkbox("Expand although the gate is not met", key="rollout_anyway")
        if st.button(f"Make {active.candidate} production", type="primary", key="rollout_expand", disabled=not anyway):
            attempt(lambda: rollout.expand(ws, figures, note))
            st.session_state["rollout_message"] = f"{active.candidate} is production; rollback returns {production}."
            st.rerun()
    with right:
        st.markdown("**Roll back**: production answers alone again")
        if st.button(f"Stop {active.candidate}", key="rollout_stop"):
            attempt(lambda: rollout.rollback(ws, note))
            st.session_state["rollout_message"] = f"{active.candidate} stopped: production {production} answers alone."
            st.rerun()

if others:
    backtest_section(others)  # before shadow, or beside it: any version against what production did

steps = rollout.history(ws)
if steps:
    with st.expander(f"History ({len(steps)} decision(s))", expanded=False):
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "when": s["ts"],
                        "decision": s["action"],
                        "candidate": s["candidate"],
                        "production": s["production"],
                        "gate met": None if not s["figures"] else s["figures"].get("gate_passed"),
                        "agreement": None if not s["figures"] else s["figures"].get("agreement"),
                        "why": s["note"],
                    }
                    for s in steps
                ]
            ),
            hide_index=True,
            width="stretch",
        )
