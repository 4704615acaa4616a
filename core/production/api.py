"""The prediction service over HTTP (FastAPI, served by uvicorn: `python -m core serve`), for systems that cannot
use a page: a camera on a trail, a shop's back end.

It serves through the same path as the Predict page (serving.Service: one decode per image, the candidate beside
production when one is in shadow or limited, the accepted decision policy, referrals marked for review) and hands
every prediction to the workspace's log writer with source `api`; it answers only once they are in the log (a file
of its replica's, fsynced and named), so a replica killed at any moment has logged every prediction it answered. The model, the
candidate and the settings are loaded once and kept until the workspace's serving stamp changes (a promotion, a
rollback, a stage change, a policy or a setting saved, in any process): a request opens no database connection.
Bad input gets a 4xx with a JSON body `{"error": "..."}` that says what to do; no traceback ever leaves the
server. Only the routes below exist: no analyst page is reachable through it.

Concurrent requests are scored together by one batcher (batching.Batcher: one forward pass at a time, so they
do not fight over the cores); a full queue answers 429 with Retry-After, a request still waiting at its deadline
503, and neither is logged. GET /metrics gives the counters in Prometheus' text format.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from core.data.images import VerifyConfig
from core.errors import UserError
from core.model import registry
from core.production import prediction_log, serving
from core.production.batching import BatchLimits, Busy, TooLate
from core.production.metrics import Metrics
from core.production.prediction import Prediction
from core.workspace import failpoints
from core.workspace.paths import Workspace

LOG = logging.getLogger("imagedp.api")
TOP_K = 5
REMEMBERED = 100_000  # answered predictions a replica keeps the version of, for feedback (~15 MB)


@dataclass(frozen=True)
class ApiLimits:
    """What one request may carry; checked from its Content-Length before the body is read."""

    max_file_bytes: int = VerifyConfig.max_bytes
    max_files: int = 32
    body_timeout_s: float = 30.0  # a client still sending its body after this long gets 408 (a slow or stalled client)
    log_wait_s: float = 60.0  # an answer waits for its predictions to be committed to the log at most this long

    @property
    def max_body_bytes(self) -> int:
        return self.max_files * self.max_file_bytes + 1_000_000  # the multipart framing


class Service(serving.Service):
    """The serving path for one workspace, with the API's replica name and counters."""

    def __init__(self, ws: Workspace, replica: str = "api", batching: BatchLimits | None = None) -> None:
        super().__init__(ws, batching)
        self.replica = replica
        self.log.replica = replica  # its log files go under logs/predictions/replica=<name>/
        self.metrics = Metrics()
        self.log.linger_s = 0.0  # answers wait for their rows: write what is there, the next requests gather meanwhile
        self._answered: OrderedDict[str, str] = OrderedDict()  # prediction id -> its model version, latest last
        self._answered_lock = threading.Lock()

    def remember(self, answered: Sequence[Prediction], version: str) -> None:
        """The predictions this replica answered (and logged): feedback on them needs no search of the log."""
        with self._answered_lock:
            for p in answered:
                self._answered[p.id] = p.version or version
            while len(self._answered) > REMEMBERED:
                self._answered.popitem(last=False)

    def version_of(self, prediction_id: str) -> str | None:
        """The model version of a logged prediction: remembered when this replica answered it, else looked up in the
        log (its files newest day first, without waiting for the database; the database's table last)."""
        with self._answered_lock:
            version = self._answered.get(prediction_id)
        if version is not None:
            return version
        self.log.flush(10.0)  # a prediction this process scored a moment ago may still be on its way to the log
        return prediction_log.version_of(self.ws, prediction_id)

    def load(self) -> None:
        try:
            super().load()
        except Exception as exc:  # noqa: BLE001 - health says it, the server log has the traceback
            LOG.exception("loading the model failed")
            self.load_error = f"the model could not be loaded: {exc}"


def answer_of(p: Prediction, classes: tuple[str, ...]) -> dict[str, Any]:
    """One image's answer as the API gives it."""
    return {
        "name": p.name,
        "prediction_id": p.id,
        "request_id": p.request_id or p.id,
        "model_version": p.version,
        "label": p.label,
        "confidence": round(float(p.confidence), 6),
        "top_k": [{"label": label, "probability": round(prob, 6)} for label, prob in p.top(classes, TOP_K)],
        "out_of_domain": bool(p.ood),
        "ood_score": round(float(p.ood_score), 6),
        "action": p.action,
        "referred_to_review": bool(p.needs_review),
    }


class Feedback(BaseModel):
    prediction_id: str
    label: str


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyDeadline:
    """ASGI middleware: a request's body must arrive within `seconds` of its first byte's wait, or the client gets
    408 (a stalled or very slow client must not hold a worker; nothing is scored or logged for it)."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds

        async def timed() -> dict[str, Any]:
            try:
                return await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except TimeoutError:
                raise HTTPException(
                    408, f"The request's body did not arrive within {self.seconds:g} s: nothing was scored; send it again."
                ) from None

        await self.app(scope, timed, send)


def docs_page(schema: dict[str, Any]) -> str:
    """The API's reference as one self-contained HTML page, from its OpenAPI schema (Swagger UI loads its script
    from a CDN, which a server without network cannot reach; /openapi.json is the machine-readable version)."""
    rows = []
    for route, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            takes = ", ".join(body) or "nothing"
            answers = ", ".join(f"{code} {r.get('description', '')}" for code, r in op.get("responses", {}).items())
            rows.append(
                f"<tr><td><code>{method.upper()} {html.escape(route)}</code></td><td>{html.escape(op.get('summary', ''))}"
                f"</td><td>{html.escape(takes)}</td><td>{html.escape(answers)}</td></tr>"
            )
    info = schema.get("info", {})
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(info.get('title', 'API'))}</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}td,th{border-bottom:1px solid #ddd;"
        "padding:6px;text-align:left;vertical-align:top}pre{background:#f5f5f5;padding:1em}</style></head><body>"
        f"<h1>{html.escape(info.get('title', 'API'))}</h1><p>{html.escape(info.get('description', ''))}</p>"
        "<table><tr><th>route</th><th>what it does</th><th>takes</th><th>answers</th></tr>"
        + "".join(rows)
        + "</table><h2>Examples</h2><pre>curl -F files=@photo.jpg http://HOST:PORT/v1/predict\n"
        "curl -F files=@a.jpg -F files=@b.jpg http://HOST:PORT/v1/predict\n"
        'curl -H \'Content-Type: application/json\' -d \'{"prediction_id": "ID", "label": "grizzly"}\' '
        'http://HOST:PORT/v1/feedback</pre><p>Errors come as <code>{"error": "what to do"}</code> with a 4xx status; '
        "429 and 503 carry Retry-After. The full schema: <a href='/openapi.json'>/openapi.json</a>.</p></body></html>"
    )


def create_app(
    ws: Workspace, replica: str = "api", limits: ApiLimits = ApiLimits(), batching: BatchLimits | None = None
) -> FastAPI:
    """The HTTP service for one workspace."""
    service = Service(ws, replica, batching)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - what FastAPI's lifespan takes
        threading.Thread(target=service.load, name="api-load", daemon=True).start()  # health says when it is ready
        yield
        service.log.flush(prediction_log.EXIT_WAIT_S)

    app = FastAPI(
        title="Image classifier: prediction API",
        version="1",
        lifespan=lifespan,
        description=f"Workspace {ws.name!r}, replica {replica!r}. Every prediction is logged for monitoring.",
        docs_url=None,  # Swagger UI needs a CDN: /docs below is drawn from the schema, offline
        redoc_url=None,
    )
    app.add_middleware(BodyDeadline, seconds=limits.body_timeout_s)
    app.state.service = service

    @app.middleware("http")
    async def bounded(request: Request, call_next):  # noqa: ANN001, ANN202 - starlette's middleware signature
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "Send a Content-Length header (a plain multipart or JSON body, not chunked).")
            if not length.isdigit() or int(length) > limits.max_body_bytes:
                return _error(
                    413,
                    f"The request is larger than {limits.max_body_bytes // 1_000_000} MB: send at most {limits.max_files} "
                    f"images of up to {limits.max_file_bytes // 1_000_000} MB each per request.",
                )
        return await call_next(request)

    @app.middleware("http")  # added last, so outermost: a request refused for its size is counted too
    async def counted(request: Request, call_next):  # noqa: ANN001, ANN202 - starlette's middleware signature
        if request.url.path != "/v1/predict":
            return await call_next(request)
        start = time.perf_counter()
        response = await call_next(request)
        code = response.status_code
        outcome = {200: "ok", 429: "busy", 503: "unavailable"}.get(code, "bad_input" if code < 500 else "error")
        service.metrics.request(outcome, time.perf_counter() - start)
        return response

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        if isinstance(exc, Busy):
            return _error(429, str(exc), {"Retry-After": "1"})
        if isinstance(exc, TooLate):
            return _error(503, str(exc), {"Retry-After": "5"})
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        said = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, f"The request is not what this endpoint takes ({said}); see /docs.")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        LOG.exception("internal error", exc_info=exc)
        return _error(500, "Internal error (a bug): nothing was logged for this request; the server log has the details.")

    def served() -> serving.Snapshot:
        if not service.ready:
            if service.load_error:
                raise UserError(service.load_error)
            raise HTTPException(503, "The model is still loading: try again in a few seconds.", {"Retry-After": "2"})
        return service.snapshot()

    @app.post("/v1/predict", summary="Classify one or more images (multipart field 'files')")
    def predict(files: Annotated[list[UploadFile], File(description="one or more images")]) -> dict[str, Any]:
        if len(files) > limits.max_files:
            raise UserError(f"{len(files)} images in one request: send at most {limits.max_files}.")
        items: list[tuple[str, bytes]] = []
        for f in files:
            data = f.file.read(limits.max_file_bytes + 1)
            if len(data) > limits.max_file_bytes:
                raise UserError(f"{f.filename}: larger than {limits.max_file_bytes // 1_000_000} MB; send a smaller image.")
            items.append((f.filename or "upload", data))
        served()  # ready, or say why not
        snap, scored = service.serve(items, "api")
        if not scored.shown:
            raise UserError("No image could be read: " + "; ".join(f"{f['source']}: {f['reason']}" for f in scored.failed))
        if not service.log.wait(scored.ticket, limits.log_wait_s):  # answered only once its rows are safe
            why = "The prediction log is not writable now: these predictions will be logged when it is"
            raise HTTPException(503, why + "; try again in a minute.", {"Retry-After": "60"})
        service.remember(scored.shown, snap.predictor.version)
        failpoints.hit("api.answering")
        service.metrics.answered(len(scored.shown), sum(p.ood for p in scored.shown))
        return {
            "predictions": [answer_of(p, snap.predictor.classes) for p in scored.shown],
            "failed": [{"name": f["source"], "error": f["reason"]} for f in scored.failed],
        }

    @app.post("/v1/feedback", summary="The true label of a prediction (stored with provenance 'api')")
    def feedback(body: Feedback) -> dict[str, Any]:
        version = service.version_of(body.prediction_id)
        if version is None:
            raise HTTPException(404, f"No logged prediction {body.prediction_id!r}: use a prediction_id /v1/predict gave.")
        classes = registry.read_meta(ws, version)["classes"]
        prediction_log.add_feedback(ws, body.prediction_id, body.label.strip(), classes, source="api", replica=service.replica)
        return {"stored": True, "prediction_id": body.prediction_id, "label": body.label.strip()}

    @app.get("/v1/health", summary="Ready only when the model is loaded and the log is writable")
    def health() -> JSONResponse:
        writable = os.access(ws.root, os.W_OK)
        ready = service.ready and writable
        why = (
            None if ready else service.load_error or ("loading the model" if not service.ready else "the workspace is read-only")
        )
        body = {"ready": ready, "replica": replica, "model_loaded": service.ready, "log_writable": writable, "why": why}
        body |= {"log_pending": service.log.pending}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/v1/model", summary="The model served: version, classes, input size, policy, rollout")
    def model() -> dict[str, Any]:
        snap = served()
        policy, active = snap.serving.policy, snap.serving.rollout
        return {
            "replica": replica,
            "version": snap.predictor.version,
            "classes": list(snap.predictor.classes),
            "input_size": snap.predictor.size,
            "policy": policy.policy_id if policy else None,
            "rollout": {"candidate": active.candidate, "stage": active.stage} if active else None,
            "candidate_problem": snap.candidate_problem,
        }

    @app.get("/docs", summary="This reference, offline", response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    @app.get("/metrics", summary="Counters in Prometheus' text format", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        text = service.metrics.text(service.batcher.batches, service.batcher.waiting, service.log.pending, replica)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return app
