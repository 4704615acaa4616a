"""The policy as stakeholders read it: in words from what it does, its outcomes per 1,000 images as a table with
intervals and a curve, the comparison with the baselines in a sentence, and which images the figures come from
(the stakeholder report, core.production.stakeholder, is built from these)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from core.drivetrain import accepted, optimizer
from core.drivetrain.decisions import Outcome, Policy
from core.drivetrain.levers import Utility
from core.model.rates import Rate


def curve_figure(curve: pd.DataFrame, chosen: Policy, others: list[Outcome], unit: str) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=curve["threshold"], y=curve["utility_per_image"], mode="lines", name="expected-utility policy")
    for o, dash in zip(others[1:], ("dash", "dot"), strict=False):
        fig.add_hline(y=o.utility_per_image, line_dash=dash, annotation_text=o.policy, annotation_position="bottom right")
    if chosen.rule == "expected_utility":
        fig.add_vline(
            x=chosen.refer_below,
            line_color="#E45756",
            annotation_text="this policy's threshold",
            annotation_position="bottom right",
        )  # at the bottom: the baselines' lines run near the top, where their labels and this one overlapped
    fig.update_layout(
        xaxis_title="refer to a human below this top probability",
        yaxis_title=f"utility per image ({unit})",
        height=380,
        margin={"t": 30, "b": 40},
        showlegend=False,
    )
    return fig


def per_1000(value: float) -> str:
    """Utility per image as a figure per 1,000 images, formatted ('-1,000', '9,466.7')."""
    return f"{value * 1000:,.1f}".removesuffix(".0")


def outcomes_frame(outcomes: list[Outcome], unit: str, intervals: list[tuple[float, float]] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "policy": [o.policy for o in outcomes],
            f"utility per 1,000 images ({unit})": [per_1000(o.utility_per_image) for o in outcomes],
            "automated (95% CI, n)": [Rate.of(o.automation_rate, o.images).text() for o in outcomes],
            "errors among automated (95% CI, n)": [
                Rate.of(o.automated_error_rate, round(o.automation_rate * o.images)).text() for o in outcomes
            ],
            "images": [o.images for o in outcomes],
        }
    )
    if intervals:
        frame.insert(2, "95% interval", [f"{per_1000(lo)} to {per_1000(hi)}" for lo, hi in intervals])
    return frame


def comparison_sentence(c: optimizer.Comparison, unit: str) -> str:
    """Whether the policy beats the better baseline by more than the noise, from the paired interval."""
    low, high = c.difference_interval
    figures = (
        f"{per_1000(c.difference)} {unit} per 1,000 images against '{c.baseline}' (95% paired interval "
        f"{per_1000(low)} to {per_1000(high)}, {c.outcomes[0].images} images)"
    )
    if c.beats_baseline:
        return f"This policy beats '{c.baseline}' by more than the noise: {figures}."
    if high < 0:
        return f"This policy does worse than '{c.baseline}': {figures}."
    return f"This policy does not beat '{c.baseline}' by more than the noise: {figures}."


def describe(policy: Policy, u: Utility | None = None) -> str:
    """The policy in words, from what it does: where it refers, and where out-of-domain inputs go."""
    refer = f"'{u.refer}'" if u else "a human"
    ood = f"'{u.actions[int(u.net()[len(u.classes)].argmax())]}'" if u else "the best action for 'out of domain'"
    if policy.rule == "top_class":
        parts = ["act on the most probable class"]
    elif policy.refer_below > 1.0:
        parts = [f"send every image to {refer}"]
    else:
        parts = ["take the action with the highest expected utility"]
        if policy.temperature != 1.0:
            parts.append(f"probabilities temperature-scaled (T = {policy.temperature:.2f})")
        if policy.refer_below > 0:
            parts.append(f"refer to {refer} when the top probability is below {policy.refer_below:.2f}")
    if policy.use_ood and policy.refer_below <= 1.0:
        parts.append(f"images flagged out of domain go to {ood}")
    elif policy.rule == "top_class" or policy.refer_below == 0:
        parts.append("never refer, out-of-domain inputs included")
    return "; ".join(parts)


def measured_on(found: accepted.AcceptedPolicy | None, images: int, version: str, seed: int) -> str:
    """Which validation images the summary's outcomes come from, and whether the optimizer saw them."""
    half = f"the {images} validation images of model {version} in the report half (seed {seed})"
    if found is None:
        return f"Measured on {half}; no policy is accepted, so nothing was fitted on any image."
    if found.seed is None:
        return (
            f"Measured on {half}. This policy was accepted before the optimizer recorded its split: if it was optimized "
            "with another seed, it may have seen these images. Optimize and accept it again to be sure."
        )
    return f"Measured on {half}, which the optimizer did not fit on: their ids are stored with the policy."
