"""compose.yaml's deployment, run as the processes it starts (this machine has no container runtime): the dashboard
(the Dockerfile's command with the service's environment) and the two API replicas (their commands as written,
ports moved to free ones on 127.0.0.1), all on one data root. Both replicas answer, every prediction either
answers lands once in the one log, and the dashboard serves the analyst's app."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import yaml

from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import colour_image, free_port, ready

ROOT = Path(__file__).resolve().parent.parent


def dockerfile() -> tuple[list[str], dict[str, str]]:
    """The image's command (the JSON form of CMD) and its ENV."""
    text = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    env = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^ENV (.*)$", text, re.M).group(1)))
    return cmd, env


def command(service: dict, image_cmd: list[str], port: int) -> list[str]:
    """The service's command as the container runs it, on a free port of 127.0.0.1 and this interpreter."""
    cmd = service.get("command", image_cmd)
    cmd = [c.replace("$$", "$") for c in cmd]  # compose's escape for a literal $
    moved = []
    for part in cmd:
        part = re.sub(r"\bpython\b", sys.executable, part)
        part = part.replace("0.0.0.0", "127.0.0.1").replace("--port 8000", f"--port {port}")
        moved.append(part)
    if "--server.port" in moved:
        moved[moved.index("--server.port") + 1] = str(port)
        moved[moved.index("--server.address") + 1] = "127.0.0.1"
    return moved


def test_compose_deployment_runs_two_replicas_and_the_dashboard_on_one_workspace(prod: Workspace, data_root: Path) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    image_cmd, image_env = dockerfile()
    assert set(compose["services"]) == {"dashboard", "api-1", "api-2"}
    from core.data.images import VerifyConfig

    assert int(image_env["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"]) == VerifyConfig.max_bytes // 1_000_000  # the public app
    assert compose["services"]["dashboard"]["environment"]["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"] == "1000"  # zip imports
    procs: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for name, service in compose["services"].items():
            port = free_port()
            env = {**os.environ, **image_env, **{k: str(v) for k, v in service["environment"].items()}}
            env |= {"IMAGEDP_DATA_ROOT": str(data_root), "IMAGEDP_WORKSPACE": prod.name}  # the volume, mounted here
            assert service["volumes"] == ["./deploy-data:/data"] and service["environment"]["IMAGEDP_DATA_ROOT"] == "/data"
            proc = subprocess.Popen(command(service, image_cmd, port), cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
            procs[name] = (proc, f"http://127.0.0.1:{port}")
        for name, (proc, url) in procs.items():
            ready(
                url + ("/_stcore/health" if name == "dashboard" else "/v1/health"),
                proc,
                proc.stderr,
                f"{name} did not start",
                300,
            )
        with urllib.request.urlopen(procs["dashboard"][1], timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        ids: dict[str, list[str]] = {}
        for name in ("api-1", "api-2"):
            health = httpx.get(procs[name][1] + "/v1/health", timeout=30).json()
            assert health["ready"] and health["replica"] == name
            files = [("files", (f"{name}-{i}.png", colour_image(i % 3, 7_000 + i), "image/png")) for i in range(3)]
            answer = httpx.post(procs[name][1] + "/v1/predict", files=files, timeout=120)
            assert answer.status_code == 200, answer.text
            ids[name] = [p["prediction_id"] for p in answer.json()["predictions"]]
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)  # what `docker compose stop` sends: a replica flushes its log on the way out
        for proc, _ in procs.values():
            proc.wait(120)
    sent = ids["api-1"] + ids["api-2"]
    assert len(set(sent)) == 6
    with store.connect(prod) as con:
        logged = con.execute("SELECT id FROM log_predictions WHERE source = 'api'").fetchall()
    assert sorted(i for (i,) in logged) == sorted(sent)  # each replica's answers, once each, in the one log
