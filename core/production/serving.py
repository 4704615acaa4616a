"""The one serving path: everything between "bytes arrived" and "prediction handed to the log". The Predict page,
the end-user app, the HTTP API, batch `predict` and the traffic simulator all score through here.

- **The serving snapshot**: the production model, the candidate beside it and its rollout scope, both models'
  accepted policies and the app's settings, from the deployment snapshot the control plane publishes
  (core.workspace.published: every promotion, rollback, stage change, policy acceptance and settings write
  publishes it again, in any process). Read again when the published file changes (a stat per request): serving
  never opens the database, so a process holding it (an analyst's DuckDB shell) stops no replica.
- **One decode per image**, in the caller's thread, at most `decoders` at once, while the batcher's worker runs
  the forward pass of the requests decoded before: decoding and the network overlap as in batch scoring.
- **The batcher** (batching.Batcher): concurrent requests in one forward pass per model; the candidate scores
  the same batch; routing, the decision policy and review referrals per image; then the log.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from core.drivetrain import accepted
from core.drivetrain.accepted import AcceptedPolicy
from core.drivetrain.decisions import DecideFn
from core.errors import UserError
from core.model import registry
from core.production import audit, deployment, prediction, prediction_log, rollout
from core.production.batching import Batcher, BatchLimits
from core.production.deployment import AppSettings
from core.production.prediction import Deciders, DecodedImage, Prediction
from core.production.rollout import PRODUCTION, Rollout
from core.progress import ProgressFn
from core.workspace import published, store
from core.workspace.paths import Workspace

if TYPE_CHECKING:  # torch comes with a model, when one scores
    from core.model.scoring import Predictor

MODELS_KEPT = 3  # production, a candidate, the one before


@dataclass(frozen=True)
class Serving:
    """What serving needs from the database: the app's settings, the model's accepted policy, the rollout."""

    settings: AppSettings
    policy: AcceptedPolicy | None
    rollout: Rollout | None = None  # a candidate beside production (shadow or limited)
    candidate_policy: AcceptedPolicy | None = None  # the candidate's own accepted policy, if any

    @property
    def decide(self) -> DecideFn | None:
        return self.policy.decider() if self.policy else None

    @property
    def deciders(self) -> Deciders:
        return Deciders.of(self.policy, self.candidate_policy)


def deployed(ws: Workspace) -> published.Published:
    """The deployment snapshot as published (store.deployed), or a message that says what to do."""
    snap = store.deployed(ws)
    if snap is None:
        raise UserError(f"The deployment snapshot {ws.root / published.FILE} cannot be read: run `python -m core check "
                        f"--workspace {ws.name} --repair` to publish it again.")  # fmt: skip
    return snap


def read(snap: published.Published, version: str) -> Serving:
    """The settings, the rollout and the accepted policies for `version`, as the snapshot says."""
    active = rollout.from_row(snap.rollout)
    active = active if active is not None and active.candidate != version else None
    candidate_policy = accepted.from_row(active.candidate, snap.policies.get(active.candidate)) if active else None
    own = accepted.from_row(version, snap.policies.get(version))
    return Serving(deployment.settings_of(snap.settings), own, active, candidate_policy)


@dataclass(frozen=True)
class Routed:
    """One request after routing: what the user sees, and every prediction to log with its stage."""

    shown: Prediction  # shown and acted on
    logged: tuple[Prediction, Prediction]  # production's and the candidate's, stage and served set


def route(active: Rollout, production: Prediction, candidate: Prediction, refer: Sequence[str | None] = (None, None)) -> Routed:
    """Set each prediction's stage and whether it is served: in shadow, production's always; in limited, the
    candidate's where the request is routed to it and within its scope. `refer` holds each model's referral
    action (its accepted policy's), so a referral is marked for the review queue."""
    acts = active.stage == "limited" and rollout.routed(candidate.sha256, active.candidate, active.scope.share)
    acts = acts and candidate.confidence >= active.scope.min_confidence
    acts = acts and not (active.scope.in_domain_only and candidate.ood)
    disagree = production.label != candidate.label
    first = replace(production, stage=PRODUCTION, served=not acts, disagrees=disagree, referred=production.action == refer[0])
    second = replace(candidate, stage=active.stage, served=acts, disagrees=disagree, referred=candidate.action == refer[1])
    return Routed(second if acts else first, (first, second))


@dataclass(frozen=True)
class Scored:
    """A set of requests scored as production serves them now."""

    shown: list[Prediction]  # one per readable input: what the user sees and what is acted on
    logged: list[Prediction]  # every prediction made, production's and the candidate's, with its stage
    failed: list[dict[str, str]]
    ticket: int = 0  # the log's ticket for these predictions (0: not logged): BackgroundLog.wait


def finish(
    active: Rollout | None,
    pairs: Sequence[tuple[Prediction, Prediction | None]],
    deciders: Deciders,
    failed: list[dict[str, str]],
) -> Scored:
    """Route each request and mark referrals (out-of-domain inputs and disagreements are marked by the predictions)."""
    if active is None or any(c is None for _, c in pairs):
        preds = [replace(p, referred=p.action == deciders.production_refer) for p, _ in pairs]
        return Scored(preds, preds, failed)
    routes = [route(active, p, c, (deciders.production_refer, deciders.candidate_refer)) for p, c in pairs]  # type: ignore[arg-type]
    return Scored([r.shown for r in routes], [p for r in routes for p in r.logged], failed)


def score(
    predictor: Predictor,
    candidate: Predictor | None,
    active: Rollout | None,
    items: Sequence[tuple[str, bytes]],
    deciders: Deciders = prediction.NO_POLICY,
    batch_size: int = 32,
    on_progress: ProgressFn | None = None,
    keep_bytes: bool = False,
    defer_properties: bool = False,
) -> Scored:
    """Score a batch of requests (a folder, a simulated fortnight) with production, and with the candidate beside it
    when one is in shadow or limited (one decode per image, the next chunk decoded while the model runs)."""
    if candidate is None or active is None or candidate.version == predictor.version:
        candidate, active = None, None
    pairs, failed = prediction.score_all(
        predictor,
        candidate,
        items,
        batch_size,
        on_progress,
        keep_bytes,
        deciders,
        defer_properties,
    )
    return finish(active, pairs, deciders, failed)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What a request is served with: the model, the candidate beside it, the settings and policies."""

    stamp: tuple[int, int]  # the published file's identity it was read from
    predictor: Predictor
    candidate: Predictor | None
    serving: Serving
    candidate_problem: str | None = None  # a candidate in shadow or limited that cannot be loaded: production alone

    @property
    def active(self) -> Rollout | None:
        return self.serving.rollout if self.candidate is not None else None

    @property
    def deciders(self) -> Deciders:
        return self.serving.deciders if self.candidate is not None else Deciders.of(self.serving.policy)

    def score(self, items: Sequence[tuple[str, bytes]], batch_size: int = 32, on_progress: ProgressFn | None = None) -> Scored:
        """A batch scored as this snapshot serves (batch `predict`, the simulator)."""
        return score(self.predictor, self.candidate, self.active, items, self.deciders, batch_size, on_progress, keep_bytes=True)


class Models:
    """Models loaded once per version (a few kept: production, a candidate, the one before)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._loaded: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> Predictor:
        from core.model import scoring  # torch: where a model runs

        with self._lock:
            if version not in self._loaded:
                if len(self._loaded) >= MODELS_KEPT:
                    self._loaded.pop(next(iter(self._loaded)))
                self._loaded[version] = scoring.load_predictor(self.ws, version)
            return self._loaded[version]


def snapshot(ws: Workspace, models: Models, version: str | None = None) -> Snapshot:
    """Serving as it is now: production (or `version`: then alone, a candidate runs beside production only)."""
    snap = deployed(ws)
    stack = registry.stack_of(snap.deployments)
    production = stack[-1] if stack else None
    chosen = version or production
    if chosen is None:
        raise UserError("This workspace has no production model yet: train one and promote it (Train page).")
    served = read(snap, chosen)
    if chosen != production:
        served = replace(served, rollout=None, candidate_policy=None)
    predictor = models.get(chosen)
    candidate, problem = None, None
    if served.rollout:
        try:
            candidate = models.get(served.rollout.candidate)
        except Exception as exc:  # noqa: BLE001 - a damaged candidate must never stop production answering
            said = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            problem = (
                f"Candidate {served.rollout.candidate} ({served.rollout.stage}) cannot be loaded, so production "
                f"{chosen} answers alone and nothing is logged for the candidate: {said} Stop the rollout "
                f"(`python -m core rollout --rollback --workspace {ws.name}`, or Roll back on the Rollout page)."
            )
            served = replace(served, rollout=None, candidate_policy=None)
    return Snapshot(snap.identity, predictor, candidate, served, problem)


@dataclass(frozen=True, eq=False)
class Prepared:
    """One request's images decoded for the snapshot that will score them."""

    snapshot: Snapshot
    decoded: list[DecodedImage]
    failed: list[dict[str, str]]


class Service:
    """One workspace served to many callers at once (the API's requests, the app's sessions): a snapshot read again
    only when the stamp changes, decoding in the callers' threads, one batcher for the forward passes."""

    def __init__(self, ws: Workspace, batching: BatchLimits | None = None) -> None:
        limits = batching or BatchLimits()
        self.ws = ws
        self.models = Models(ws)
        self.log = prediction_log.background(ws)
        self.batcher: Batcher[Prepared, tuple[Snapshot, Scored]] = Batcher(self._score, limits)
        self._decoding = threading.BoundedSemaphore(limits.decoders or max(os.cpu_count() or 1, 1))
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self.load_error: str | None = None

    def snapshot(self) -> Snapshot:
        """Serving now: the snapshot held, unless the deployment snapshot was published again since."""
        found = published.identity(self.ws)
        with self._lock:
            if self._snapshot is None or self._snapshot.stamp != found:
                self._snapshot = snapshot(self.ws, self.models)
            return self._snapshot

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def load(self) -> None:
        """Load the production model (at start, off the request path); say why when it cannot."""
        try:
            self.snapshot()
            audit.current(self.ws)  # the audit's share, read now: the log's writer then never waits for it
            self.load_error = None
        except UserError as exc:
            self.load_error = str(exc)

    def prepare(self, items: Sequence[tuple[str, bytes]]) -> Prepared:
        """Decode a request's images for the current snapshot (a bounded number of callers at once)."""
        snap = self.snapshot()
        with self._decoding:
            decoded, failed = prediction.decode_many(snap.predictor, items, True, snap.candidate)
        return Prepared(snap, decoded, failed)

    def serve(self, items: Sequence[tuple[str, bytes]], source: str | None) -> tuple[Snapshot, Scored]:
        """Score one request as production serves it now, together with whatever else is waiting, and hand every
        prediction to the log with `source` (None: not production traffic, nothing logged). A request larger than
        one forward pass goes in chunks: the next is decoded while the one before is scored."""
        size = max(self.batcher.limits.max_images, 1)
        snap, shown, logged, failed = self.snapshot(), [], [], []
        queued = None
        for start in range(0, len(items), size):
            prepared = self.prepare(items[start : start + size])
            failed += prepared.failed
            if queued is not None:
                snap, part = self.batcher.result(queued)
                shown, logged = shown + part.shown, logged + part.logged
            queued = self.batcher.enqueue(prepared, len(prepared.decoded)) if prepared.decoded else None
        if queued is not None:
            snap, part = self.batcher.result(queued)
            shown, logged = shown + part.shown, logged + part.logged
        scored = Scored(shown, logged, failed)
        if source is not None and scored.logged:
            keep = snap.serving.settings.keep_images
            batch = prediction_log.LogBatch(scored.logged, source, snap.predictor.version, keep_images=keep)
            scored = dataclasses.replace(scored, ticket=self.log.submit(batch))
        return snap, scored

    def _score(self, batch: list[Prepared]) -> list[tuple[Snapshot, Scored]]:
        """The batcher's worker: the requests decoded for one snapshot go through each model in one pass."""
        results: dict[int, tuple[Snapshot, Scored]] = {}
        for snap in {id(p.snapshot): p.snapshot for p in batch}.values():
            group = [(i, p) for i, p in enumerate(batch) if p.snapshot is snap]
            pairs = prediction.score_decoded(
                snap.predictor,
                snap.candidate,
                [d for _, p in group for d in p.decoded],
                True,
                snap.deciders,
            )
            start = 0
            for i, p in group:
                mine = pairs[start : start + len(p.decoded)]
                start += len(p.decoded)
                results[i] = (snap, finish(snap.active, mine, snap.deciders, p.failed))
        return [results[i] for i in range(len(batch))]
