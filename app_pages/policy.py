"""Policy: the simulator (utility of decisions on validation predictions) and the optimizer; accept a policy."""

import streamlit as st

from core.drivetrain import accepted, decisions, levers, optimizer, summary
from ui.common import attempt, current_workspace, needs_production, table

SEARCH = "policy_search"  # owner: this page; (workspace, version, utility) -> Search

ws = current_workspace()
st.title("Decision policy")
st.caption(
    "Drivetrain step 4: probabilities are not decisions. The simulator replays the production model's validation "
    "predictions through a policy and the utility matrix; the optimizer picks the policy's thresholds."
)
needs_production(ws, "the policy decides on the production model's predictions")
v = attempt(lambda: optimizer.validation(ws))
force = accepted.in_force(ws, v)
policy, utility = force.policy, force.utility
if force.accepted:
    st.success(f"Accepted for model {v.version}: {summary.describe(policy, utility)}.")
    if force.stale:
        st.warning("The utility matrix changed since this policy was accepted: optimize and accept again to use it.")
else:
    st.info(f"No policy accepted for model {v.version} yet: showing the default ({summary.describe(policy, utility)}).")

outcomes = decisions.policy_and_baselines(utility, policy, v.logits, v.labels, v.ood)
st.subheader(f"Simulator: {len(v.labels)} validation images")
table(summary.outcomes_frame(outcomes, utility.unit))
curve = decisions.threshold_curve(utility, policy, v.logits, v.labels, v.ood)
st.plotly_chart(summary.curve_figure(curve, policy, outcomes, utility.unit), key="policy_curve")
st.markdown("**True class × action** (validation images: what this policy did with each)")
table(outcomes[0].table, index=True)

st.subheader("Optimizer")
st.caption(
    "Chooses everything on one half of the validation images: the temperature (kept only when the best policy with it "
    "beats the best without it there) and the referral threshold; reports on the other half with a 95% bootstrap interval."
)
key = (ws.name, v.version, repr(utility))
use_ood = st.checkbox(
    f"Out-of-domain inputs take the best action for '{levers.OUT_OF_DOMAIN}'",
    value=policy.use_ood,
    key="policy_use_ood",
    help="A safety rule the optimizer cannot fit: validation images are all in domain, so there it only costs.",
)
key = (*key, use_ood)
if st.button("Optimize the policy", key="policy_optimize"):
    st.session_state[SEARCH] = (key, attempt(lambda: optimizer.optimize(utility, v, use_ood=use_ood)))
found = st.session_state.get(SEARCH)
if found and found[0] == key:
    search = found[1]
    compared = optimizer.compare(utility, search.policy, v, search.seed)
    low, high = compared.intervals[0]
    st.markdown(
        f"**Best on the fit half ({search.fit_images} images):** {summary.describe(search.policy, utility)}.  \n"
        f"On the {search.report_images} held-out images: **{summary.per_1000(compared.outcomes[0].utility_per_image)} "
        f"{utility.unit} per 1,000 images** (95% interval {summary.per_1000(low)} to {summary.per_1000(high)}); fitted "
        f"temperature {search.temperature_fitted:.2f} ({'used' if search.temperature_used else 'not used: no better there'})."
    )
    st.markdown("Held-out half, with 95% bootstrap intervals")
    table(summary.outcomes_frame(compared.outcomes, utility.unit, compared.intervals))
    with st.expander("The fit half (where the thresholds were chosen: flattering by construction)"):
        table(summary.outcomes_frame(search.fit, utility.unit))
    said = summary.comparison_sentence(compared, utility.unit)
    if compared.beats_baseline:
        st.success(said)
        if st.button("Accept this policy", type="primary", key="policy_accept"):
            attempt(lambda: accepted.accept_search(ws, v.version, search, utility))
            del st.session_state[SEARCH]
            st.rerun()
    else:
        baseline = dict(decisions.named_policies(search.policy))[compared.baseline]
        st.warning(f"{said} Recommended: **{compared.baseline}** ({summary.describe(baseline, utility)}).")
        if st.button(f"Accept '{compared.baseline}'", type="primary", key="policy_accept_baseline"):
            attempt(lambda: accepted.accept_baseline(ws, v.version, search, utility, baseline))
            del st.session_state[SEARCH]
            st.rerun()
        anyway = st.checkbox("I have read the above: accept the optimized policy anyway", key="policy_anyway")
        if st.button("Accept the optimized policy", disabled=not anyway, key="policy_accept"):
            attempt(lambda: accepted.accept_search(ws, v.version, search, utility))
            del st.session_state[SEARCH]
            st.rerun()
