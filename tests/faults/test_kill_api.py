"""Kill a real `python -m core serve` while it answers requests: at the moment a request's predictions are in the
log and its answer is not sent (api.answering), and while a batch of rows is on its way to the log (log.writing).
Every prediction a client got in a 200 answer is in the log exactly once after `check --repair`: compared with the
ids the client received, kept outside the workspace. The answer the crash cut off is logged or not (the client
never saw it); nothing else is."""

from __future__ import annotations

import concurrent.futures
import signal
from pathlib import Path

import httpx
import pytest

from core.workspace import store
from core.workspace.paths import Workspace
from tests.faults import harness
from tests.helpers import colour_image, free_port, until

pytestmark = pytest.mark.faults
REQUESTS = 24


def ask(base: str, i: int) -> list[str]:
    """One request of two images from a client; the ids it was answered with ([] when the server died first)."""
    files = [("files", (f"r{i}-{k}.png", colour_image((i + k) % 3, 900 + 10 * i + k), "image/png")) for k in range(2)]
    try:
        answer = httpx.post(f"{base}/v1/predict", files=files, timeout=120)
    except httpx.TransportError:
        return []
    assert answer.status_code == 200, answer.text
    return [p["prediction_id"] for p in answer.json()["predictions"]]


def up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("point,nth", [("api.answering", 9), ("log.writing", 5)])
def test_a_replica_killed_mid_answer_has_logged_every_prediction_it_answered(
    point: str, nth: int, prod: Workspace, data_root: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = harness.start(data_root, "serve", "--workspace", "prod", "--port", str(port), "--replica", "r1",
                           env={"IMAGEDP_FAILPOINT": f"{point}:{nth}"})  # fmt: skip
    until(lambda: up(base) or server.poll() is not None, "the server never became ready")
    assert server.poll() is None, server.communicate()[1].decode()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # four clients at once: batches hold several requests
        answered = [i for ids in pool.map(lambda i: ask(base, i), range(REQUESTS)) for i in ids]
    server.wait(60)
    assert server.returncode == -signal.SIGKILL, server.communicate()[1].decode()[-2000:]
    assert 0 < len(answered) < 2 * REQUESTS  # some answered, then the crash

    tally = harness.Tally(f"api ({point})")
    tally.kills += 1
    tally.landed += 1
    tally.points[point] = 1
    harness.repaired(prod, tally)  # spooled rows, if any, go into the database
    with store.connect(prod) as con:
        found = dict(con.execute("SELECT id, count(*) FROM log_predictions WHERE list_contains(?, id) GROUP BY id",
                                 [answered]).fetchall())  # fmt: skip
    tally.lost += len(set(answered) - set(found))
    tally.doubled += sum(n - 1 for n in found.values())
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0, (tally.lost, tally.doubled)


REPLICAS = ("r1", "r2", "r3")


def test_three_replicas_write_one_log_at_once_and_one_killed_loses_no_answered_prediction(
    prod: Workspace, data_root: Path
) -> None:
    """Three `serve` processes on one workspace, clients spread over them, while this test holds the database the
    whole time (as a long import would): every replica answers and logs without the database's lock. r2 kills
    itself mid-answer under that load; r1 and r3 answer every request sent to them. After `check --repair` every
    prediction answered 200, by any replica, is in the log exactly once, in its replica's partition."""
    ports = {name: free_port() for name in REPLICAS}
    servers = {
        name: harness.start(data_root, "serve", "--workspace", "prod", "--port", str(port), "--replica", name,
                            env={"IMAGEDP_FAILPOINT": "api.answering:6"} if name == "r2" else None)
        for name, port in ports.items()
    }  # fmt: skip
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for name, server in servers.items():
            until(lambda n=name, s=server: up(base[n]) or s.poll() is not None, f"replica {name} never became ready")
            assert server.poll() is None, server.communicate()[1].decode()
        sent = [(REPLICAS[i % 3], i) for i in range(3 * REQUESTS)]
        with store.connect(prod), concurrent.futures.ThreadPoolExecutor(6) as pool:  # the database held throughout
            answers = list(pool.map(lambda job: (job[0], ask(base[job[0]], job[1])), sent))
        servers["r2"].wait(60)
        assert servers["r2"].returncode == -signal.SIGKILL, servers["r2"].communicate()[1].decode()[-2000:]
        for name in ("r1", "r3"):
            assert all(ids for who, ids in answers if who == name), f"{name} failed a request"
            assert servers[name].poll() is None, servers[name].communicate()[1].decode()[-2000:]
    finally:
        for server in servers.values():
            if server.poll() is None:
                server.terminate()
                server.wait(60)
    answered = {i: who for who, ids in answers for i in ids}
    assert 0 < sum(who == "r2" for who in answered.values()) < 2 * REQUESTS  # r2 answered some, then the crash

    tally = harness.Tally("api (3 replicas, r2 killed at api.answering)")
    tally.kills = tally.landed = 1
    tally.points["api.answering"] = 1
    harness.repaired(prod, tally)
    with store.connect(prod) as con:
        found = con.execute(
            "SELECT id, count(*), any_value(replica) FROM log_predictions WHERE list_contains(?, id) GROUP BY id",
            [list(answered)],
        ).fetchall()
    tally.lost += len(set(answered) - {row[0] for row in found})
    tally.doubled += sum(n - 1 for _, n, _ in found)
    tally.print()
    assert tally.lost == 0 and tally.doubled == 0, (tally.lost, tally.doubled)
    assert all(replica == answered[i] for i, _, replica in found)  # each row in the partition of the replica that answered
