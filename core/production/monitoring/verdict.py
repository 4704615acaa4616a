"""One verdict on production (healthy / needs attention / failing), with the one or two reasons that decide it.

Overview's Production card, the Summary, the Monitor's header and `monitor --json` all call `verdict`:

- failing: in the latest judged window, accuracy from labels fell by more than its floor, or out-of-domain
  inputs are at least FAILING_OOD of the images, or the same cause has alerted in every recent window;
- needs attention: a change that matters in one of the recent windows;
- healthy: the recent windows were judged and nothing in them matters;
- not judged: nothing logged, or too few distinct images in the recent windows to say.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.production.monitoring import stats
from core.production.monitoring.causes import Cause, report_causes
from core.production.monitoring.drift import DriftReport, drift_report
from core.production.monitoring.queries import LogFilter, default_sources
from core.workspace.paths import Workspace

RECENT = 3  # windows a verdict looks at: the latest ones, as a person on call would
FAILING_OOD = 0.25  # out-of-domain images among a window's distinct images that make production failing
HEALTHY, ATTENTION, FAILING, NOT_JUDGED = "healthy", "needs attention", "failing", "not judged"


@dataclass(frozen=True)
class Verdict:
    status: str  # HEALTHY / ATTENTION / FAILING / NOT_JUDGED
    reasons: tuple[str, ...]  # one or two sentences, from the figures
    windows: tuple[str, ...]  # the windows it judged
    causes: tuple[Cause, ...]  # the recent windows' causes, latest window first

    @property
    def headline(self) -> str:
        return {ATTENTION: "Production needs attention", NOT_JUDGED: "Production cannot be judged yet"}.get(
            self.status, f"Production is {self.status}"
        )

    @property
    def icon(self) -> str:
        return {HEALTHY: "✅", ATTENTION: "⚠️", FAILING: "🛑"}.get(self.status, "⏳")


def _failing(cause: Cause) -> bool:
    if cause.kind == "accuracy" or any(t.metric == "feedback_accuracy" for t in cause.tests):
        return True
    ood = next((t for t in cause.tests if t.metric == "ood_rate"), None)
    return ood is not None and ood.value >= FAILING_OOD


def verdict(report: DriftReport) -> Verdict:
    """The verdict on the report's latest RECENT windows."""
    recent = report.windows[-RECENT:]
    judged = [w for w in recent if w.judged]
    if not report.windows:
        said = (
            f"No prediction by the production model {report.reference_version} in these sources yet: the "
            f"{report.excluded:,} there were made by other versions."
            if report.excluded
            else "Nothing is logged for these sources yet."
        )
        return Verdict(NOT_JUDGED, (said,), (), ())
    if not judged:
        sizes = ", ".join(f"{w.window}: {w.images}" for w in recent)
        return Verdict(
            NOT_JUDGED,
            (f"Too few distinct images to judge the latest window(s) (at least {stats.MIN_WINDOW} each; {sizes}).",),
            tuple(w.window for w in recent),
            (),
        )
    by_window = report_causes(report)
    causes = [c for w in reversed(judged) for c in by_window.get(w.window, [])]
    names = tuple(w.window for w in judged)
    images = sum(w.images for w in judged)
    if not causes:
        return Verdict(
            HEALTHY,
            (f"No change that matters in the last {len(judged)} window(s) judged ({images:,} distinct images).",),
            names,
            (),
        )
    latest = judged[-1].window
    in_every = [c for c in by_window.get(latest, []) if len(judged) > 1 and all(
        any(o.kind == c.kind for o in by_window.get(w.window, [])) for w in judged
    )]  # fmt: skip
    decisive = [c for c in causes if c.window == latest and _failing(c)] or in_every
    if decisive:
        return Verdict(FAILING, _reasons(decisive, len(judged) if not _failing(decisive[0]) else 0), names, tuple(causes))
    return Verdict(ATTENTION, _reasons(causes, 0), names, tuple(causes))


def _reasons(causes: list[Cause], every: int) -> tuple[str, ...]:
    said = []
    for c in causes[:2]:
        tail = f" (in each of the last {every} windows)" if every else ""
        said.append(f"{c.window}: {c.title.lower()}{tail}: {c.words}.")
    return tuple(said)


def production_verdict(ws: Workspace, f: LogFilter | None = None) -> tuple[Verdict, DriftReport]:
    """The verdict on production's log (by default: day windows, simulated traffic left out once real rows
    exist), with the report it comes from."""
    report = drift_report(ws, f or LogFilter(sources=default_sources(ws)))
    return verdict(report), report
