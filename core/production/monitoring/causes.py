"""Alerts grouped under their likely cause: the tests that move together in a window, said in one sentence.

Out-of-domain inputs move the OOD rate, energy, the embedding, the confidence, often the class mix and
the image properties at once: sixteen lines of p-values that are one fact. A window's alerts are grouped
in this order, each taking the tests it explains:

1. out-of-domain inputs (the OOD rate alerts): everything else the window shows;
2. image conditions (a property alerts): the properties, confidence, energy, the embedding;
3. class mix (the mix alerts): the mix;
4. unfamiliar content (confidence, energy or the embedding alone);
5. accuracy from labels (alone: the model is wrong more often with nothing else to show why).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.production.monitoring.drift import LEVERS, PROPERTY_METRICS, DriftAlert, DriftReport, Example, WindowDrift
from core.production.monitoring.stats import DIRECTIONS, DriftTest

PROPERTIES = {*PROPERTY_METRICS, *(f"{m}_tails" for m in PROPERTY_METRICS)}
MODEL = {"confidence", "confidence_tails", "energy", "energy_tails", "embedding"}
MIX = {"class_mix", "class_share"}
ORDER = ("out_of_domain", "image_conditions", "class_mix", "unfamiliar", "accuracy")
TITLES = {
    "out_of_domain": "Out-of-domain inputs",
    "image_conditions": "Image conditions changed",
    "class_mix": "Class mix changed",
    "unfamiliar": "Unfamiliar content",
    "accuracy": "Accuracy from labels fell",
}
LEAD = {  # the test whose lever and images a cause shows
    "out_of_domain": ("ood_rate",),
    "image_conditions": tuple(sorted(PROPERTIES)),
    "class_mix": ("class_share", "class_mix"),
    "unfamiliar": ("energy", "energy_tails", "embedding", "confidence", "confidence_tails"),
    "accuracy": ("feedback_accuracy",),
}


@dataclass(frozen=True)
class Cause:
    window: str
    kind: str  # one of ORDER
    title: str
    words: str  # the cause in one sentence, from the window's figures
    tests: tuple[DriftTest, ...]  # the alerts it explains
    lever: str
    examples: tuple[Example, ...]


def direction(test: DriftTest) -> str:
    """The change in a word or two ("darker", "blurrier"), from the test's own sign."""
    base = test.metric.removesuffix("_tails")
    lower, higher = DIRECTIONS.get(base, (f"lower {base}", f"higher {base}"))
    low = test.subject == "low" if test.metric.endswith("_tails") else test.effect < 0
    return (lower if low else higher).split(" (")[0]


def _joined(words: list[str]) -> str:
    words = list(dict.fromkeys(words))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _accuracy(w: WindowDrift) -> str:
    if not w.feedback:
        return ""
    return f"accuracy from labels {w.feedback_correct / w.feedback:.0%} ({w.feedback_correct} of {w.feedback})"


def _words(kind: str, w: WindowDrift, tests: list[DriftTest]) -> str:
    props = [direction(t) for t in tests if t.metric in PROPERTIES]
    parts: list[str] = []
    if kind == "out_of_domain":
        flagged = round(w.ood_share * w.images)
        parts.append(f"{w.ood_share:.0%} of the window's images ({flagged} of {w.images}) look like none of the classes")
    if kind == "class_mix":
        lead = next(t for t in tests if t.metric in MIX)
        parts.append(f"{lead.subject!r} is {lead.value:.0%} of images vs {lead.reference:.0%} expected")
    if props:
        parts.append(f"images {_joined(props)}")
    if kind in ("image_conditions", "unfamiliar", "out_of_domain") and any(t.metric.startswith("confidence") for t in tests):
        parts.append("the model less confident" if any(direction(t).startswith("less") for t in tests) else "confidence moved")
    if kind == "unfamiliar" and any(t.metric in ("energy", "energy_tails", "embedding") for t in tests):
        parts.append("content unlike the reference")
    lead = next((t for t in tests if t.metric == "feedback_accuracy"), None)
    if (lead is not None or kind == "out_of_domain") and (said := _accuracy(w)):
        parts.append(said + (f" vs {lead.reference:.0%} on validation" if lead else ""))
    return "; ".join(p for p in parts if p)


def _kind(tests: list[DriftTest]) -> str | None:
    metrics = {t.metric for t in tests}
    if "ood_rate" in metrics:
        return "out_of_domain"
    if metrics & PROPERTIES:
        return "image_conditions"
    if metrics & MIX:
        return "class_mix"
    if metrics & MODEL:
        return "unfamiliar"
    return "accuracy" if "feedback_accuracy" in metrics else None


def _takes(kind: str) -> set[str]:
    everything = PROPERTIES | MODEL | MIX | {"ood_rate", "feedback_accuracy"}
    return {
        "out_of_domain": everything,
        "image_conditions": PROPERTIES | MODEL,
        "class_mix": MIX,
        "unfamiliar": MODEL,
        "accuracy": {"feedback_accuracy"},
    }[kind]


def window_causes(w: WindowDrift, alerts: list[DriftAlert], q: float) -> list[Cause]:
    """The window's alerts grouped under their likely causes, strongest first."""
    left = sorted(w.alerts(q), key=lambda t: t.adjusted_p)
    found: list[Cause] = []
    while left and (kind := _kind(left)) is not None:
        mine = [t for t in left if t.metric in _takes(kind)]
        left = [t for t in left if t.metric not in _takes(kind)]
        lead = next((a for m in LEAD[kind] for a in alerts if a.metric == m), None) or next(
            a for a in alerts if a.metric == mine[0].metric
        )
        found.append(Cause(w.window, kind, TITLES[kind], _words(kind, w, mine), tuple(mine), LEVERS[lead.metric], lead.examples))
    return found


def report_causes(report: DriftReport) -> dict[str, list[Cause]]:
    """window -> its causes, for every window with an alert."""
    by_window: dict[str, list[DriftAlert]] = {}
    for a in report.alerts:
        by_window.setdefault(a.window, []).append(a)
    return {w.window: window_causes(w, by_window[w.window], report.q) for w in report.windows if w.window in by_window}
