"""Overview: the Drivetrain walk (objective, levers, data, model) and production, with what each step still needs."""

import streamlit as st

from core.drivetrain import accepted, levers, objective
from core.model import registry
from core.production import prediction_log, review, rollout
from core.production.monitoring import queries, verdict
from core.workspace import store
from ui.common import current_workspace, log_settled
from ui.production import production_verdict, verdict_icon

ws = current_workspace()
log_settled(ws)  # what this app just scored is in the log before the page reads it
st.title(f"Overview: {ws.name}")
st.caption("The Drivetrain approach: objective → levers → data → model, then production. Each step says what it still needs.")
counts = store.label_counts(ws)
production = registry.production_version(ws)
goal = objective.load_objective(ws)
classes = list(registry.read_meta(ws, production)["classes"]) if production else sorted(counts)
_, utility_saved = levers.load_utility(ws, classes) if len(classes) >= 2 else (None, False)
policy = accepted.active(ws, production) if production else None
logged = prediction_log.count(ws)


DONE, TODO = ":material/check_circle:", ":material/radio_button_unchecked:"


def step(title: str, done: bool, state: str, todo: str, links: list[tuple[str, str]]) -> None:
    with st.container(border=True):
        st.markdown(f"#### {DONE if done else TODO} {title}")
        st.write(state)
        if not done:
            st.caption(f"Missing: {todo}")
        cols = st.columns(len(links))
        for col, (page, label) in zip(cols, links, strict=True):
            col.page_link(page, label=label)


left, right = st.columns(2)
with left:
    step(
        "1. Objective",
        goal.complete,
        goal.statement or "No objective written yet.",
        "the outcome, the decision, who is affected and the success measure.",
        [("app_pages/objective.py", "Objective")],
    )
    step(
        "3. Data",
        len(counts) >= 2 and min(counts.values(), default=0) >= 2,
        f"{sum(counts.values())} images in {len(counts)} labels"
        + (f" ({store.quarantined_count(ws)} quarantined)." if counts else "."),
        "at least two labels with images.",
        [("app_pages/gather.py", "Gather"), ("app_pages/explore.py", "Verify and explore"), ("app_pages/clean.py", "Clean")],
    )
with right:
    step(
        "2. Levers",
        utility_saved,
        "Actions and a utility matrix saved." if utility_saved else "Default actions and utilities.",
        "actions with their costs and a utility matrix in your own unit.",
        [("app_pages/levers.py", "Levers")],
    )
    versions = registry.list_versions(ws)
    model_state = (
        f"Production model {production} ({registry.headline_accuracy(ws, production)}); "
        + ("a decision policy is accepted." if policy else "no decision policy accepted.")
        if production
        else f"{len(versions)} model version(s), none in production."
    )
    step(
        "4. Model",
        bool(production and policy),
        model_state,
        "a production model and an accepted decision policy." if production else "a trained model promoted to production.",
        [("app_pages/train.py", "Train"), ("app_pages/evaluate.py", "Evaluate"), ("app_pages/policy.py", "Policy")],
    )
active = rollout.current(ws)
waiting = review.backlog(ws) if logged else None
judged = production_verdict(ws) if logged and production else None
simulated = prediction_log.count(ws, "simulation") if logged else 0
in_production = f"{logged:,} predictions logged." if logged else "Nothing scored yet."
if simulated and "simulation" not in queries.default_sources(ws):
    in_production += f" The verdict leaves out the {simulated:,} simulated ones: real predictions exist."
if judged:
    in_production = f"{verdict_icon(judged)} **{judged.headline}.** {' '.join(judged.reasons)} " + in_production
if active:
    in_production += f" Candidate {active.candidate} runs in {active.stage} beside production {production}."
if waiting is not None:
    in_production += f" {waiting.pending} prediction(s) wait for review; {waiting.reviewed} reviewed so far."
step(
    "Production",
    judged is not None and judged.status == verdict.HEALTHY,
    in_production,
    "predictions from the app, batch scoring or the simulator."
    if not logged
    else f"a healthy verdict (now: {judged.status if judged else 'no production model'}); Monitor shows the causes.",
    [
        ("app_pages/predict.py", "Predict"),
        ("app_pages/monitor.py", "Monitor"),
        ("app_pages/rollout.py", "Rollout"),
        ("app_pages/review.py", "Review"),
        ("app_pages/summary.py", "Summary"),
    ],
)
