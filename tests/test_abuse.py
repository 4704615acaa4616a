"""The abuse suite: what an attacker or a clumsy user tries, one case per test, through the command line a user
types (in-process). Each must end in a clear one-line message, never a traceback, with the workspace unchanged:
the same files under images/, quarantine/ and models/, the same catalog, models, production pointer, rollout,
policies, log and labels, and no other workspace made. (A refused source may add a row to gather_failures and the
audit log may say what was refused: those are records of the refusal, not changes to the data.)

Cases that need a network stand-in use the local web server; a read-only data root and a full disk use real
mounts where this machine allows them (root on Linux), and skip with the reason where it does not."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from core.model import integrity, registry
from core.production import check
from core.workspace import store, workspaces
from core.workspace.paths import Workspace
from tests.helpers import app, bomb_png, cli, colour_image, errors, make_zip, png_bytes, upload
from tests.test_integrity import invalid_json, missing_key, reordered_classes, truncated_weights
from tests.webserver import serve

TABLES = ("images", "models", "deployments", "rollouts", "policies", "predictions", "feedback", "runs", "settings")


def snapshot(ws: Workspace) -> dict[str, object]:
    """Everything a user would call their data: files by content, the tables that hold decisions and the log."""
    files = {
        str(p.relative_to(ws.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in (ws.images_dir, ws.quarantine_dir, ws.models_dir)
        if folder.is_dir()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    with store.connect(ws) as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        tables = {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in TABLES if t in present}
    return {"files": files, "tables": tables, "workspaces": sorted(p.name for p in workspaces.workspaces_dir().iterdir())}


@dataclass(frozen=True)
class Case:
    id: str
    run: Callable[[Workspace, Path], str]  # does the abusive thing the way a user would; returns what they saw
    says: str  # a regular expression the message must match


def typed(*args: str, fails: bool = True) -> str:
    """A command as typed: it must fail with an error line (or, for a batch, report the failure in its output)."""
    done = cli(*args)
    text = done.stderr + done.stdout
    assert "Traceback" not in text
    if fails:  # one line saying what is wrong (argparse prints its usage above it)
        assert done.returncode != 0 and "error: " in done.stderr.strip().splitlines()[-1], text
    return text


def image_file(tmp: Path, name: str, data: bytes) -> Path:
    folder = tmp / "incoming" / "cat"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder.parent


def zip_file(tmp: Path, data: bytes) -> str:
    path = tmp / "upload.zip"
    path.write_bytes(data)
    return str(path)


def gather_zip(data: bytes) -> Callable[[Workspace, Path], str]:
    return lambda ws, tmp: typed("gather", "--workspace", ws.name, "--zip", zip_file(tmp, data))


def gather_label(label: str) -> Callable[[Workspace, Path], str]:
    return lambda ws, tmp: typed(
        "gather", "--workspace", ws.name, "--folder", str(image_file(tmp, "a.png", png_bytes(1)) / "cat"), "--label", label
    )


def new_workspace(name: str) -> Callable[[Workspace, Path], str]:
    return lambda ws, tmp: typed("workspace", "create", name)


def gather_image(data: bytes) -> Callable[[Workspace, Path], str]:
    """A folder holding one abusive image: the import reports it failed, with the reason, and adds nothing."""
    return lambda ws, tmp: typed(
        "gather", "--workspace", ws.name, "--folder", str(image_file(tmp, "x.png", data)), "--json", fails=False
    )


def with_model(tamper: Callable[[Workspace, str], None], command: str) -> Callable[[Workspace, Path], str]:
    def run(ws: Workspace, tmp: Path) -> str:
        tamper(ws, registry.production_version(ws))
        if command == "predict":
            return typed("predict", "--workspace", ws.name, str(image_file(tmp, "one.png", colour_image(0, 1))))
        return typed(command, "--workspace", ws.name)

    return run


def head_shapes_changed(ws: Workspace, version: str) -> None:
    """A weights file whose head has one class too many, re-checksummed so only the shape check can tell."""
    path = ws.models_dir / version / registry.WEIGHTS
    arrays = load_file(str(path))
    head = max((k for k in arrays if k.endswith(".weight") and arrays[k].ndim == 2), key=lambda k: k)
    arrays[head] = np.concatenate([arrays[head], arrays[head][:1]])
    bias = head.removesuffix(".weight") + ".bias"
    if bias in arrays:
        arrays[bias] = np.concatenate([arrays[bias], arrays[bias][:1]])
    save_file(arrays, str(path))
    with store.connect(ws) as con:
        con.execute("UPDATE models SET checksums = ? WHERE version = ?", [json.dumps(integrity.checksums(path.parent)), version])


def newer_schema(ws: Workspace, tmp: Path) -> str:
    with store.connect(ws) as con:
        con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    store._READY.clear()  # noqa: SLF001 - as a fresh process would: the check runs when a process first opens it
    try:
        return typed("verify", "--workspace", ws.name)
    finally:
        with store.connect(ws) as con:  # back, so the snapshot can be read the same way as before
            con.execute(f"UPDATE meta SET value = '{store.SCHEMA_VERSION}' WHERE key = 'schema_version'")


def private_redirect(ws: Workspace, tmp: Path) -> str:
    with serve() as base:
        urls = tmp / "urls.txt"
        urls.write_text(f"{base}/to-metadata\n")
        return typed("gather", "--workspace", ws.name, "--urls", str(urls), "--label", "cat",
                     "--allow-private", "127.0.0.1", "--json", fails=False)  # fmt: skip


@contextmanager
def resolving(host: str, *addresses: str) -> Iterator[list[str]]:
    """getaddrinfo answers host with each address in turn (the last one after that): a rebinding name server."""
    real, asked = socket.getaddrinfo, []

    def answer(name: str, *args: object, **kwargs: object) -> list:
        if name != host:
            return real(name, *args, **kwargs)
        asked.append(name)
        address = addresses[min(len(asked), len(addresses)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))]

    socket.getaddrinfo = answer
    try:
        yield asked
    finally:
        socket.getaddrinfo = real


def dns_private(ws: Workspace, tmp: Path) -> str:
    urls = tmp / "urls.txt"
    urls.write_text("http://inside.test/a.png\n")
    with resolving("inside.test", "10.1.2.3"):
        return typed("gather", "--workspace", ws.name, "--urls", str(urls), "--label", "cat", "--json", fails=False)


def dns_rebinding(ws: Workspace, tmp: Path) -> str:
    """Public when checked, this machine when the client would look again: the pinned connection goes to the
    checked address (unreachable here), so nothing from 127.0.0.1 is fetched."""
    with serve() as base:
        urls = tmp / "urls.txt"
        urls.write_text(f"http://rebind.test:{base.rsplit(':', 1)[1]}/img/3.png\n")
        with resolving("rebind.test", "93.184.216.34", "127.0.0.1") as asked:
            text = typed("gather", "--workspace", ws.name, "--urls", str(urls), "--label", "cat", "--timeout", "2",
                         "--json", fails=False)  # fmt: skip
        assert asked == ["rebind.test"]  # resolved once
        return text


def huge_file(ws: Workspace, tmp: Path) -> str:
    path = tmp / "huge.png"
    with open(path, "wb") as fh:  # sparse: 60 MB on paper, nothing on disk
        fh.truncate(60_000_000)
    return typed("predict", "--workspace", ws.name, str(path), "--json", fails=False)


def binary_url_list(ws: Workspace, tmp: Path) -> str:
    path = tmp / "urls.txt"
    path.write_bytes(b"\x1b[2J\x1b]0;owned\x07\x00\xff\xfe" * 20)
    text = typed("gather", "--workspace", ws.name, "--urls", str(path), "--label", "cat", "--json", fails=False)
    assert "\x1b" not in text and "\x07" not in text  # nothing the terminal would act on
    return text


CASES = [
    Case("zip-bomb-ratio", gather_zip(make_zip({"cat/bomb.png": b"\0" * 50_000_000})), r"zip bomb"),
    Case("zip-bomb-count", gather_zip(make_zip({f"cat/{i}.png": b"" for i in range(20_001)})), r"20001 files is over 20000"),
    Case("zip-absolute-path", gather_zip(make_zip({"/etc/cron.d/evil.png": png_bytes(1)})), r"unsafe path"),
    Case("zip-dotdot", gather_zip(make_zip({"cat/../../evil.png": png_bytes(1)})), r"unsafe path"),
    Case("zip-windows-drive", gather_zip(make_zip({"C:/evil.png": png_bytes(1)})), r"unsafe path"),
    Case("zip-link", gather_zip(make_zip({"cat/ok.png": png_bytes(1)}, links=("cat/link.png",))), r"is a link"),
    Case("zip-device-name", gather_zip(make_zip({"cat/x.png": png_bytes(1), "NUL/x.png": png_bytes(2)})), r"device name"),
    Case("zip-device-file", gather_zip(make_zip({"cat/x.png": png_bytes(1)}, devices=("cat/zero.png",))), r"device or pipe"),
    Case("label-slash", gather_label("cats/../../etc"), r"Label .* is not allowed"),
    Case("label-dotdot", gather_label(".."), r"Label '\.\.' is not allowed"),
    Case("label-control-chars", gather_label("cat\x1b[31m\x07"), r"Label 'cat\\x1b\[31m\\x07' is not allowed"),
    Case("label-very-long", gather_label("c" * 300), r"1-64 letters"),
    Case("label-html", gather_label("<img src=x onerror=alert(1)>"), r"Label .* is not allowed"),
    Case("workspace-slash", new_workspace("../outside"), r"Workspace name .* is not allowed"),
    Case("workspace-control-chars", new_workspace("w\x1b]0;x\x07"), r"Workspace name .* is not allowed"),
    Case("workspace-very-long", new_workspace("w" * 300), r"1-64 letters"),
    Case("workspace-html", new_workspace("<script>alert(1)</script>"), r"Workspace name .* is not allowed"),
    Case("workspace-device-name", new_workspace("nul.txt"), r"not a device name"),
    Case("png-200-megapixels", gather_image(bomb_png(14_150, 14_150)), r"image too large"),
    Case("png-decodes-to-10-GB", gather_image(bomb_png(60_000, 60_000)), r"decompression bomb"),
    Case("file-over-50-MB", huge_file, r"file too large \(60 MB > 50 MB\)"),
    Case("url-list-binary", binary_url_list, r"not a list of image URLs"),
    Case("redirect-to-metadata-address", private_redirect, r"private|link-local|169\.254"),
    Case("dns-answers-private", dns_private, r"private"),
    Case("dns-rebinding", dns_rebinding, r"connection failed|timed out"),
    Case("model-classes-reordered", with_model(reordered_classes, "predict"), r"changed since the version was registered"),
    Case("model-json-missing-key", with_model(missing_key, "evaluate"), r"lacks preprocessing"),
    Case("model-json-invalid", with_model(invalid_json, "predict"), r"not readable JSON"),
    Case("weights-truncated", with_model(truncated_weights, "evaluate"), r"damaged: truncated"),
    Case("weights-shapes-mismatch", with_model(head_shapes_changed, "predict"), r"shape|classes"),
    Case("schema-from-a-newer-version", newer_schema, r"newer version"),
    Case(
        "workers-negative",
        lambda ws, tmp: typed("gather", "--workspace", ws.name, "--urls", "x", "--label", "c", "--workers", "-3"),
        r"--workers takes a whole number at least 1",
    ),  # fmt: skip
    Case(
        "allow-private-garbage",
        lambda ws, tmp: typed(
            "gather", "--workspace", ws.name, "--urls", "x", "--label", "c", "--allow-private", "not-a-network"
        ),
        r"network",
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_abuse_ends_in_a_clear_message_and_an_unchanged_workspace(case: Case, prod: Workspace, tmp_path: Path) -> None:
    before = snapshot(prod)
    said = case.run(prod, tmp_path)
    assert re.search(case.says, said), said
    assert "Traceback" not in said and not any(c in said for c in "\x1b\x07\x00")
    if case.id.startswith(("model-", "weights-")):
        return  # the tampering itself changed models/; what matters is that nothing was scored or evaluated
    assert snapshot(prod) == before


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith(("model-", "weights-"))], ids=lambda c: c.id)
def test_a_tampered_model_is_never_scored_or_evaluated(case: Case, prod: Workspace, tmp_path: Path) -> None:
    def tables() -> dict[str, object]:  # all but models: one tampering re-records the checksums there
        return {k: v for k, v in snapshot(prod)["tables"].items() if k != "models"}

    before = tables()
    case.run(prod, tmp_path)
    assert tables() == before  # no prediction logged, no run, no pointer moved
    page = app("app_pages/evaluate.py", "prod")
    assert not page.exception and any("is damaged or was changed on disk" in e for e in errors(page))


def _cannot(why: str) -> None:
    """Skip where mounting is not allowed; never on CI (it runs as root), where a skip would hide the test."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the read-only and full-disk tests, but {why}", pytrace=False)
    pytest.skip(why)


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        _cannot(f"this machine does not let the tests mount file systems ({done.stderr.strip()})")


@contextmanager
def mounted(target: Path, *options: str, source: str = "tmpfs") -> Iterator[Path]:
    """A real file system mounted at target for the test (tmpfs of a given size, or a read-only bind)."""
    if os.geteuid() != 0:
        _cannot("mounting a small or read-only file system needs root")
    target.mkdir(parents=True, exist_ok=True)
    if source == "tmpfs":
        _mount("-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target))
    else:
        _mount("--bind", source, str(target))
        _mount("-o", "remount,bind," + ",".join(options), str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(str(p.relative_to(REPO)) for p in (REPO / "app_pages").glob("*.py"))
READ_ONLY_COMMANDS = (("verify",), ("check", "--repair"), ("train",), ("evaluate",), ("rollout", "--status"), ("review",),
                      ("monitor",))  # fmt: skip


def test_a_read_only_data_root_gets_a_clear_message_everywhere(
    prod: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(prod)
    image = image_file(tmp_path, "one.png", colour_image(0, 1))
    with mounted(tmp_path / "ro", "ro", source=str(prod.root.parents[1])) as root:
        monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
        store._READY.clear()  # noqa: SLF001 - as a fresh process would open it
        for args in (*READ_ONLY_COMMANDS, ("gather", "--folder", str(image)), ("predict", str(image / "cat" / "one.png"))):
            said = typed(args[0], "--workspace", "prod", *args[1:])
            assert re.search(r"read-only", said), (args, said)
        assert re.search(r"read-only", typed("workspace", "create", "fresh"))
        for page in PAGES:
            at = app(page, "prod")
            assert not at.exception, (page, at.exception)
            assert any("read-only" in e for e in errors(at)), (page, errors(at))
    monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(prod.root.parents[1]))
    assert snapshot(prod) == before


def test_a_full_disk_loses_nothing_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3 MB file system fills up during an import of 12 MB of images: the command says the disk is full, every
    catalog row that landed has its whole file, and once there is room check --repair leaves nothing behind and
    the same import completes with each image once."""
    noise = np.random.default_rng(0)
    folder = tmp_path / "incoming" / "cat"
    folder.mkdir(parents=True)
    for i in range(60):
        (folder / f"{i}.png").write_bytes(encode_noise(noise))
    with mounted(tmp_path / "small", "size=3m") as root:
        monkeypatch.setenv(workspaces.DATA_ROOT_ENV, str(root))
        store._READY.clear()  # noqa: SLF001
        said = typed("gather", "--workspace", "w", "--folder", str(folder.parent), "--json", fails=False)
        assert re.search(r"disk is full|No space left", said), said
        subprocess.run(["mount", "-o", "remount,size=64m", str(root)], check=True)
        ws = workspaces.resolve("w")
        for row in store.images(ws, status=None).itertuples():
            assert hashlib.sha256((ws.root / row.path).read_bytes()).hexdigest() == row.sha256
        check.check(ws, repair=True)
        assert check.check(ws).problems == ()
        typed("gather", "--workspace", "w", "--folder", str(folder.parent), fails=False)
        catalog = store.images(ws)
        assert len(catalog) == 60 == catalog["sha256"].nunique()


def encode_noise(rng: np.random.Generator) -> bytes:
    """A 200 kB PNG of noise (noise does not compress)."""
    from PIL import Image

    from tests.helpers import encode

    return encode(Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)))


HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def test_html_in_every_text_a_user_types_is_rendered_inert(prod: Workspace) -> None:
    """Script in the objective, an action's name, the unit, the app's title and scope, a reviewer's name and an
    upload's file name: no page renders it as HTML (no markdown with HTML allowed anywhere), and the downloadable
    summary escapes it."""
    from dataclasses import replace

    from core.drivetrain import levers, objective
    from core.production import deployment

    objective.save_objective(prod, objective.Objective(HOSTILE, HOSTILE, HOSTILE, HOSTILE))
    classes = registry.read_meta(prod, registry.production_version(prod))["classes"]
    utility = levers.default_utility(classes)
    levers.save_utility(prod, replace(utility, actions=(HOSTILE + " 1", *utility.actions[1:]), unit=HOSTILE))
    deployment.save_settings(prod, deployment.AppSettings(HOSTILE, HOSTILE, True))
    page = app("app_pages/predict.py", "prod")
    upload(page, [(HOSTILE + ".png", colour_image(0, 3))])
    assert not page.exception
    for path in PAGES:
        at = app(path, "prod")
        assert not at.exception, (path, at.exception)
        for element in [*at.markdown, *at.caption]:
            assert not element.proto.allow_html, (path, element.value)
    sources = [
        p.read_text() for p in [*(REPO / "app_pages").glob("*.py"), *(REPO / "ui").glob("*.py"), REPO / "streamlit_app.py"]
    ]
    assert not any(word in text for text in sources for word in ("unsafe_allow_html", "st.html(", "components.html"))
    from core.production import stakeholder, stakeholder_html

    text = stakeholder_html.report_html(stakeholder.stakeholder_report(prod))  # the Summary page's download
    assert "<script>alert" not in text and "<img src=x" not in text and "&lt;script&gt;" in text


def test_a_thousand_uploads_at_once_are_each_scored_and_logged_once(prod: Workspace) -> None:
    """1,000 files dropped on the Predict page in one go (ten of them broken): one table of 990 answers, ten
    reasons, the page stays responsive (details for the first few only), and the log holds 990 rows, each once."""
    files = [(f"{i}.png", colour_image(i % 3, 90_000 + i)) for i in range(990)]
    files += [(f"broken{i}.jpg", b"\xff\xd8 not really") for i in range(10)]
    page = upload(app("app_pages/predict.py", "prod"), files)
    assert not page.exception
    assert len(page.dataframe[0].value) == 990 and sum("could not be scored" in e for e in errors(page)) == 10
    from core.production import prediction_log

    prediction_log.background(prod).flush(timeout=60)
    with store.connect(prod) as con:
        rows, ids, requests = con.execute(
            "SELECT count(*), count(DISTINCT id), count(DISTINCT request_id) FROM log_predictions"
        ).fetchone()
    assert rows == ids == requests == 990


def test_a_thousand_uploads_at_once_are_added_to_the_data(ws: Workspace) -> None:
    files = [(f"{i}.png", colour_image(i % 3, 95_000 + i)) for i in range(1000)]
    page = app("app_pages/gather.py", ws.name)
    page.file_uploader(key="gather_upload_files").set_value([(n, d, "image/png") for n, d in files])
    page.text_input(key="gather_upload_label").set_value("cat")
    page.button(key="gather_upload_go").click().run()
    assert not page.exception and errors(page) == []
    catalog = store.images(ws)
    assert len(catalog) == 1000 == catalog["sha256"].nunique()
