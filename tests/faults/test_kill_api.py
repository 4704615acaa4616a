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
