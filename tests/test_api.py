"""The prediction API end to end: a real uvicorn server on 127.0.0.1, called over HTTP with httpx."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.errors import UserError
from core.model import registry
from core.production import api, audit, batching, deployment, prediction_log, rollout, serving
from core.workspace import log_table, store
from core.workspace.paths import Workspace
from tests.helpers import colour_image, derived_version, fake_prediction, free_port

LIMITS = api.ApiLimits(max_file_bytes=200_000, max_files=4)


def until(condition: object, what: str, limit_s: float = 120.0) -> None:
    """Wait for a condition (a hang, not a slow machine, runs out the limit)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what}")
        time.sleep(0.05)


@contextmanager
def running(app: object) -> Iterator[httpx.Client]:
    """The app on a real uvicorn server on 127.0.0.1, with a client for it; stopped afterwards."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        until(lambda: server.started, "uvicorn to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=120) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture
def served(prod: Workspace) -> Iterator[tuple[httpx.Client, object]]:
    app = api.create_app(prod, "test", LIMITS)
    with running(app) as client:
        until(lambda: client.get("/v1/health").status_code == 200, "the model to load")
        yield client, app


def api_rows(ws: Workspace) -> int:
    with store.connect(ws) as con:
        return con.execute("SELECT count(*) FROM log_predictions WHERE source = 'api'").fetchone()[0]


def images(*labels: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"img{i}.png", colour_image(label, 900 + i), "image/png")) for i, label in enumerate(labels)]


def test_predict_one_and_many_then_feedback(served: tuple[httpx.Client, object], prod: Workspace) -> None:
    client, app = served
    version = registry.production_version(prod)
    classes = registry.read_meta(prod, version)["classes"]
    one = client.post("/v1/predict", files=images(0))
    assert one.status_code == 200, one.text
    [answer] = one.json()["predictions"]
    assert answer["model_version"] == version and answer["label"] in classes and answer["name"] == "img0.png"
    assert [t["label"] for t in answer["top_k"]][0] == answer["label"] and len(answer["top_k"]) == min(5, len(classes))
    assert abs(sum(t["probability"] for t in answer["top_k"]) - 1.0) < 1e-3 or len(classes) > 5
    assert set(answer) >= {
        "prediction_id",
        "request_id",
        "confidence",
        "out_of_domain",
        "ood_score",
        "action",
        "referred_to_review",
    }
    many = client.post("/v1/predict", files=images(0, 1, 2))
    assert many.status_code == 200 and len(many.json()["predictions"]) == 3 and many.json()["failed"] == []
    assert app.state.service.log.flush(60)
    assert api_rows(prod) == 4  # every answer logged once, with source api

    told = client.post("/v1/feedback", json={"prediction_id": answer["prediction_id"], "label": classes[1]})
    assert told.status_code == 200, told.text
    with store.connect(prod) as con:
        rows = con.execute("SELECT label, source FROM log_feedback WHERE prediction_id = ?", [answer["prediction_id"]]).fetchall()
    assert rows == [(classes[1], "api")]
    unknown = client.post("/v1/feedback", json={"prediction_id": "nope", "label": classes[0]})
    assert unknown.status_code == 404 and "prediction_id /v1/predict gave" in unknown.json()["error"]
    wrong = client.post("/v1/feedback", json={"prediction_id": answer["prediction_id"], "label": "zebra"})
    assert wrong.status_code == 400 and "not one of the model's classes" in wrong.json()["error"]


def test_bad_input_gets_a_json_error_and_leaves_no_log_row(served: tuple[httpx.Client, object], prod: Workspace) -> None:
    client, app = served
    bodies = {
        "no files": client.post("/v1/predict", data={"note": "x"}),
        "not an image": client.post("/v1/predict", files=[("files", ("a.png", b"not an image", "image/png"))]),
        "one file too big": client.post("/v1/predict", files=[("files", ("big.png", b"x" * 300_000, "image/png"))]),
        "too many files": client.post("/v1/predict", files=images(0, 1, 2, 0, 1)),
        "body too big": client.post(
            "/v1/predict", files=[("files", ("huge.png", b"x" * (LIMITS.max_body_bytes + 10), "image/png"))]
        ),
        "feedback not JSON": client.post("/v1/feedback", content=b"label=3", headers={"content-type": "text/plain"}),
    }
    codes = {name: r.status_code for name, r in bodies.items()}
    assert codes == {
        "no files": 422,
        "not an image": 400,
        "one file too big": 400,
        "too many files": 400,
        "body too big": 413,
        "feedback not JSON": 422,
    }
    for name, r in bodies.items():
        said = r.json()["error"]
        assert said and "Traceback" not in r.text and 'File "' not in r.text, name
    assert "send at most 4 images" in bodies["body too big"].json()["error"]
    mixed = client.post("/v1/predict", files=[*images(0), ("files", ("bad.jpg", b"\xff\xd8broken", "image/jpeg"))])
    assert mixed.status_code == 200 and [f["name"] for f in mixed.json()["failed"]] == ["bad.jpg"]
    assert app.state.service.log.flush(60)
    assert api_rows(prod) == 1  # only the one image answered
    assert client.get("/").status_code == 404 and client.get("/levers").status_code == 404  # no analyst page here


def another_process(*args: str) -> None:
    """A command run as its own process on the same data root (the test's IMAGEDP_DATA_ROOT)."""
    done = subprocess.run([sys.executable, "-m", "core", *args, "--workspace", "prod"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_health_model_and_a_promotion_elsewhere_reach_the_server(served: tuple[httpx.Client, object], prod: Workspace) -> None:
    client, app = served
    first = registry.production_version(prod)
    health = client.get("/v1/health").json()
    assert health["ready"] and health["model_loaded"] and health["log_writable"] and health["replica"] == "test"
    assert client.get("/v1/model").json()["version"] == first
    other = derived_version(prod, first, permute=[1, 2, 0])
    before = app.state.service.snapshot()
    assert app.state.service.snapshot() is before  # held: the next request reads no database
    another_process("models", "--promote", other)  # the database, then the serving stamp
    assert client.get("/v1/model").json()["version"] == other  # the very next request (the cache holds 30 s otherwise)
    assert client.post("/v1/predict", files=images(0)).json()["predictions"][0]["model_version"] == other
    assert app.state.service.snapshot() is not before
    another_process("rollout", "--shadow", first)  # the old version beside the new one: it never answers the client
    shown = client.post("/v1/predict", files=images(0, 1, 2)).json()["predictions"]
    assert {p["model_version"] for p in shown} == {other} and client.get("/v1/model").json()["rollout"]["stage"] == "shadow"
    assert app.state.service.log.flush(60)
    with store.connect(prod) as con:
        staged = con.execute(
            "SELECT model_version, stage, count(*) FROM log_predictions WHERE source = 'api' AND model_version = ? GROUP BY ALL",
            [first],
        ).fetchall()
    assert staged == [(first, "shadow", 3)]  # the candidate's predictions are logged beside, never shown


def test_health_says_why_when_nothing_is_in_production(prod: Workspace) -> None:
    with store.connect(prod) as con:
        con.execute("DELETE FROM deployments")
    store.publish_serving(prod)  # what replicas serve is what was published
    with running(api.create_app(prod, "test")) as client:
        until(lambda: client.get("/v1/health").json()["why"] != "loading the model", "the load to end")
        health = client.get("/v1/health")
        assert health.status_code == 503 and "no production model yet" in health.json()["why"]
        refused = client.post("/v1/predict", files=images(0))
        assert refused.status_code == 400 and "train one and promote it" in refused.json()["error"]


def test_serve_says_when_its_port_is_taken(prod: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--workspace", "prod", "--port", str(port)]) == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


PROMETHEUS_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]+="[^"]*",?)*\})? -?[0-9.e+]+$|^\S+ \S+ inf$')


def test_metrics_parse_as_prometheus_text(served: tuple[httpx.Client, object]) -> None:
    client, _ = served
    assert client.post("/v1/predict", files=images(0, 1)).status_code == 200
    assert client.post("/v1/predict", files=[("files", ("a.png", b"nope", "image/png"))]).status_code == 400
    huge = [("files", ("huge.png", b"x" * (LIMITS.max_body_bytes + 10), "image/png"))]
    assert client.post("/v1/predict", files=huge).status_code == 413  # refused before its body is read: counted too
    text = client.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    samples = [line for line in text.text.splitlines() if line and not line.startswith("#")]
    assert samples and all(PROMETHEUS_LINE.match(line) for line in samples), [s for s in samples if not PROMETHEUS_LINE.match(s)]
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in samples}
    assert values['imagedp_requests_total{replica="test",outcome="ok"}'] == 1
    assert values['imagedp_requests_total{replica="test",outcome="bad_input"}'] == 2
    assert values['imagedp_request_seconds_count{replica="test"}'] == 3 and values['imagedp_images_total{replica="test"}'] == 2
    assert values['imagedp_batch_images_count{replica="test"}'] >= 1 and values['imagedp_queue_images{replica="test"}'] == 0


def test_a_full_queue_answers_429_and_logs_nothing(prod: Workspace) -> None:
    app = api.create_app(prod, "test", batching=batching.BatchLimits(max_queue=0))  # no image may wait: all refused
    with running(app) as client:
        until(lambda: client.get("/v1/health").status_code == 200, "the model to load")
        refused = client.post("/v1/predict", files=images(0))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "try again" in refused.json()["error"]
    assert app.state.service.log.flush(30) and api_rows(prod) == 0


def test_requests_arriving_together_share_one_forward_pass_with_the_same_outputs(prod: Workspace) -> None:
    service = serving.Service(prod, batching.BatchLimits(max_images=12, max_wait_ms=600_000))  # closes on 12 images
    service.load()
    requests = [[(f"r{r}-{i}.png", colour_image((r + i) % 3, 50 * r + i)) for i in range(3)] for r in range(4)]
    answers: dict[int, object] = {}
    threads = [threading.Thread(target=lambda r=r: answers.__setitem__(r, service.serve(requests[r], None))) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert list(service.batcher.batches) == [12]  # one forward pass for the four requests
    for r, items in enumerate(requests):
        _, together = answers[r]
        alone = service.snapshot().score(items)  # the same images scored on their own, as batch scoring does
        assert [p.name for p in together.shown] == [n for n, _ in items] == [p.name for p in alone.shown]
        for a, b in zip(together.shown, alone.shown, strict=True):
            assert np.allclose(a.probs, b.probs, atol=1e-5) and a.label == b.label and a.action == b.action


def test_the_batcher_refuses_a_full_queue_and_withdraws_a_request_past_its_deadline() -> None:
    def run(
        deadline_s: float,
    ) -> tuple[batching.Batcher, threading.Event, list[list[str]], dict[str, object], list[threading.Thread]]:
        """A batcher whose worker takes request a and stays busy with it until the test sets the gate."""
        entered, gate, seen, results = threading.Event(), threading.Event(), [], {}

        def blocked(requests: list[list[str]]) -> list[list[str]]:
            seen.append([n for names in requests for n in names])
            entered.set()
            gate.wait()
            return [[f"scored {n}" for n in names] for names in requests]

        limits = batching.BatchLimits(max_images=1, max_wait_ms=0, max_queue=2, deadline_s=deadline_s)
        batcher = batching.Batcher(blocked, limits)

        def call(name: str, items: list[str]) -> None:
            try:
                results[name] = batcher.submit(items, len(items))
            except UserError as exc:
                results[name] = exc

        threads = [threading.Thread(target=call, args=("a", ["a.png"]))]
        threads[0].start()
        assert entered.wait(60)  # a is being scored; the worker cannot take anything else
        threads.append(threading.Thread(target=call, args=("b", ["b1.png", "b2.png"])))
        threads[1].start()
        return batcher, gate, seen, results, threads

    batcher, gate, seen, results, threads = run(deadline_s=600)
    until(lambda: batcher.waiting == 2, "b to queue")
    with pytest.raises(batching.Busy):
        batcher.submit(["c.png"], 1)  # two images wait already: no room
    gate.set()
    for t in threads:
        t.join(60)
    assert results == {"a": ["scored a.png"], "b": ["scored b1.png", "scored b2.png"]}  # each its own part back
    assert seen == [["a.png"], ["b1.png", "b2.png"]]  # b whole (a request is never split), c never

    batcher, gate, seen, results, threads = run(deadline_s=0.2)
    threads[1].join(60)  # b's deadline passes while the worker is still busy with a, however slow the machine
    assert isinstance(results["b"], batching.TooLate) and batcher.waiting == 0
    gate.set()
    threads[0].join(60)
    assert seen == [["a.png"]]  # b was withdrawn before it was scored: nothing of it reaches a log


def test_a_stalled_client_gets_408_and_leaves_no_log_row(prod: Workspace) -> None:
    app = api.create_app(prod, "test", api.ApiLimits(body_timeout_s=0.5))
    with running(app) as client:
        until(lambda: client.get("/v1/health").status_code == 200, "the model to load")
        port = int(str(client.base_url).rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port), timeout=120) as raw:  # the server's deadline ends the wait
            raw.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 5000\r\n\r\n--b\r\n"  # then nothing more: a client that stalled
            )
            answer = raw.recv(65536).decode()
            head, _, body = answer.partition("\r\n\r\n")
            length = int(re.search(r"content-length: (\d+)", head, re.I).group(1))
            while len(body.encode()) < length:  # the body may come in its own segment
                body += raw.recv(65536).decode()
            answer = f"{head}\r\n\r\n{body}"
        assert answer.startswith("HTTP/1.1 408") and "did not arrive within 0.5 s" in answer and "Traceback" not in answer
        assert client.post("/v1/predict", files=images(0)).status_code == 200  # the server serves on
    assert app.state.service.log.flush(30) and api_rows(prod) == 1  # the answered one only


def test_the_docs_work_offline(served: tuple[httpx.Client, object]) -> None:
    client, _ = served
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "POST /v1/predict" in page.text and "POST /v1/feedback" in page.text and "GET /metrics" in page.text
    assert "<script" not in page.text and "cdn" not in page.text.lower()  # nothing to fetch from elsewhere
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]


def test_a_request_larger_than_a_pass_is_scored_in_chunks_and_answered_whole(prod: Workspace) -> None:
    service = serving.Service(prod, batching.BatchLimits(max_images=4, max_wait_ms=0))
    items = [(f"{i}.png", colour_image(i % 3, 700 + i)) for i in range(10)] + [("bad.png", b"nope")]
    _, scored = service.serve(items, "app")
    assert list(service.batcher.batches) == [4, 4, 2]  # three passes: the next chunk decoded while one is scored
    assert [p.name for p in scored.shown] == [n for n, _ in items[:10]] and [f["source"] for f in scored.failed] == ["bad.png"]
    alone = service.snapshot().score(items)
    assert [p.label for p in scored.shown] == [p.label for p in alone.shown]
    assert service.log.flush(60)
    with store.connect(prod) as con:
        assert con.execute("SELECT count(DISTINCT id) FROM log_predictions WHERE source = 'app'").fetchone()[0] == 10


@contextmanager
def duckdb_open_elsewhere(ws: Workspace) -> Iterator[None]:
    """Another process has workspace.duckdb open for writing for the block (an analyst's DuckDB shell, say): no other
    process can open it meanwhile."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "sys.stdin.read()", str(ws.db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == b"held\n"
        yield
    finally:
        holder.communicate(b"")


def test_a_replica_serves_and_logs_what_was_published_while_another_process_holds_the_database(
    prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving reads the deployment snapshot, never the database: with workspace.duckdb open in another process, a
    request is answered and logged, and a change published before the hold (the app's settings, the audit share) is
    what it is served with."""
    service = serving.Service(prod, batching.BatchLimits(max_images=4, max_wait_ms=0))
    service.load()
    first = service.snapshot()
    deployment.save_settings(prod, dataclasses.replace(first.serving.settings, title="Published", audit_share=0.5))
    opened: list[str] = []
    monkeypatch.setattr(store, "connect", lambda ws, **kw: opened.append(str(ws.root)) or pytest.fail("a connection"))
    with duckdb_open_elsewhere(prod):
        snap, scored = service.serve([("a.png", colour_image(0, 901))], "app")
        assert len(scored.shown) == 1 and snap.predictor is first.predictor and snap.serving.settings.title == "Published"
        assert service.log.wait(scored.ticket, 600)  # in the log while the database is still held
        assert audit.current(prod).share == 0.5 and opened == []
    monkeypatch.undo()
    with store.connect(prod) as con:  # the request answered while the database was held is in the log
        assert con.execute("SELECT count(*), any_value(audit_p) FROM log_predictions WHERE source = 'app'").fetchone() == (1, 0.5)


def test_feedback_is_stored_while_another_process_holds_the_database(
    served: tuple[httpx.Client, object], prod: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feedback on a prediction this replica answered (remembered) and on one another process logged (found in the
    log's files) is stored while another process holds the database, as a long import does: a replica never waits for
    the database to take a label. (A wait would last the whole hold here: it is made longer than the test.)"""
    client, _ = served
    classes = registry.read_meta(prod, registry.production_version(prod))["classes"]
    answered = client.post("/v1/predict", files=images(0))
    assert answered.status_code == 200, answered.text
    mine = answered.json()["predictions"][0]["prediction_id"]
    other = prediction_log.to_frame(prod, [fake_prediction(0)], "app", registry.production_version(prod))
    log_table.append(prod, "predictions", other, "app")  # scored by the app, in another process
    monkeypatch.setattr(store, "LOCK_TIMEOUT_S", 3600.0)
    with duckdb_open_elsewhere(prod):
        for prediction_id, label in ((mine, classes[1]), (other["id"][0], classes[0])):
            told = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label})
            assert told.status_code == 200, told.text
    with store.connect(prod) as con:
        rows = con.execute("SELECT prediction_id, label, source FROM log_feedback ORDER BY label").fetchall()
    assert sorted(rows) == sorted([(mine, classes[1], "api"), (other["id"][0], classes[0], "api")])


def test_batch_predict_and_a_running_replica_serve_a_rollout_committed_before_the_database_was_held(
    prod: Workspace, tmp_path: Path
) -> None:
    """A stage change committed (and so published) reaches a running replica on its next request, and a batch
    `predict` started while another process has workspace.duckdb open answers and logs (it never opens it)."""
    service = serving.Service(prod, batching.BatchLimits(max_images=4, max_wait_ms=0))
    service.load()
    v1 = registry.production_version(prod)
    v2 = derived_version(prod, v1, permute=[1, 2, 0])
    rollout.start(prod, v2, "shadow")
    image = tmp_path / "one.png"
    image.write_bytes(colour_image(1, 902))
    with duckdb_open_elsewhere(prod):
        snap, scored = service.serve([("a.png", colour_image(0, 903))], "api")
        assert snap.active is not None and snap.active.candidate == v2
        assert sorted(p.stage for p in scored.logged) == ["production", "shadow"]
        assert service.log.wait(scored.ticket, 600)
        done = subprocess.run([sys.executable, "-m", "core", "predict", str(image), "--workspace", "prod", "--json"],
                              capture_output=True, text=True, env={**os.environ, store.LOCK_TIMEOUT_ENV: "0.5"})  # fmt: skip
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["logged"] == 2 and out["rollout"] == {"candidate": v2, "stage": "shadow"}
    with store.connect(prod) as con:
        stages = con.execute("SELECT source, stage, count(*) FROM log_predictions GROUP BY ALL ORDER BY ALL").fetchall()
    assert stages == [("api", "production", 1), ("api", "shadow", 1), ("batch", "production", 1), ("batch", "shadow", 1)]
