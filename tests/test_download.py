"""Downloads against a real local HTTP server: good images and every failure with its reason."""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.data import download
from core.data.download import DownloadConfig, UrlItem
from core.workspace import store
from core.workspace.paths import Workspace
from tests.helpers import png_bytes
from tests.webserver import Handler, serve

LOCAL = ("127.0.0.1/32",)
FAST = DownloadConfig(timeout_s=1.0, connect_timeout_s=1.0, max_bytes=100_000, allow_private=LOCAL)


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with serve() as base:
        yield base


def test_good_images_are_stored_with_their_url(ws: Workspace, web: str) -> None:
    urls = [UrlItem(f"{web}/img/{i}.png", "cat photo") for i in range(6)]
    report = download.download_images(ws, urls, "cat", FAST)
    assert len(report.added) == 6 and not report.failed
    catalog = store.images(ws)
    assert set(catalog["url"]) == {u.url for u in urls}
    assert set(catalog["query"]) == {"cat photo"} and set(catalog["source_kind"]) == {"url"}


FAILURES = [
    ("/page.jpg", "not an image: the server sent text/html", "html"),
    ("/missing.png", "HTTP 404", "404"),
    ("/slow.png", "timed out", "slow-headers"),
    ("/trickle.png", "timed out", "slow-body"),
    ("/loop", "more than 5 redirects", "redirect-loop"),
    ("/big.png", "too large", "oversized-declared"),
    ("/big-nolength.png", "too large", "oversized-streamed"),
]


@pytest.mark.parametrize("path,reason", [f[:2] for f in FAILURES], ids=[f[2] for f in FAILURES])
def test_each_failure_is_reported_with_its_reason(ws: Workspace, web: str, path: str, reason: str) -> None:
    report = download.download_images(ws, [UrlItem(web + path), UrlItem(f"{web}/img/77.png")], "cat", FAST)
    assert len(report.added) == 1, "one bad URL must not stop the others"
    assert report.failed == [{"source": web + path, "reason": report.failed[0]["reason"], "kind": "url", "label": "cat"}]
    assert reason in report.failed[0]["reason"]
    assert store.failures(ws)["source"].tolist() == [web + path]


def test_redirects_are_followed(ws: Workspace, web: str) -> None:
    report = download.download_images(ws, [UrlItem(f"{web}/redirect")], "cat", FAST)
    assert len(report.added) == 1


def test_content_decides_the_format_not_the_extension(ws: Workspace, web: str) -> None:
    download.download_images(ws, [UrlItem(f"{web}/webp.jpg")], "cat", FAST)
    row = store.images(ws).iloc[0]
    assert row["format"] == "WEBP" and row["path"].endswith(".webp")


def test_private_addresses_are_refused_unless_allowed(ws: Workspace, web: str) -> None:
    strict = DownloadConfig(timeout_s=1.0)
    report = download.download_images(ws, [UrlItem(f"{web}/img/1.png")], "cat", strict)
    assert "private address 127.0.0.1" in report.failed[0]["reason"]
    assert store.images(ws).empty


@pytest.mark.parametrize(
    "url,reason",
    [("ftp://example.com/a.png", "not an http(s) URL"), ("http://no-such-host.invalid/a.png", "not found")],
    ids=["ftp-scheme", "unknown-host"],
)
def test_unusable_urls(ws: Workspace, url: str, reason: str) -> None:
    report = download.download_images(ws, [UrlItem(url)], "cat", FAST)
    assert reason in report.failed[0]["reason"]


def test_identical_content_is_stored_once(ws: Workspace, web: str) -> None:
    report = download.download_images(ws, [UrlItem(f"{web}/copy/a.png"), UrlItem(f"{web}/copy/b.png")], "cat", FAST)
    assert len(report.added) == 1 and "same content" in report.skipped[0]["reason"]
    assert len(os.listdir(ws.images_dir / "cat")) == 1


def test_rerun_skips_without_fetching_again(ws: Workspace, web: str) -> None:
    urls = [UrlItem(f"{web}/img/{i}.png") for i in (50, 51)]
    download.download_images(ws, urls, "cat", FAST)
    before = Handler.hits.get("/img/50.png", 0)
    again = download.download_images(ws, urls, "cat", FAST)
    assert again.added == [] and [s["reason"] for s in again.skipped] == ["already downloaded"] * 2
    assert Handler.hits.get("/img/50.png", 0) == before


def test_progress_reaches_the_total(ws: Workspace, web: str) -> None:
    events: list[tuple[int, int, str]] = []
    download.download_images(
        ws, [UrlItem(f"{web}/img/{i}.png") for i in (60, 61, 62)], "cat", FAST, on_progress=lambda *e: events.append(e)
    )
    assert events[-1][:2] == (3, 3)


def test_parse_url_list_ignores_blanks_comments_and_repeats() -> None:
    text = "# my list\nhttp://a/1.png\n\n  http://a/2.png \nhttp://a/1.png\n"
    assert download.parse_url_list(text) == ["http://a/1.png", "http://a/2.png"]


def test_the_deadline_holds_however_slowly_a_server_sends(ws: Workspace, web: str) -> None:
    started = time.monotonic()
    report = download.download_images(ws, [UrlItem(f"{web}/drip.png")], "cat", FAST)  # a byte every 0.2 s, for 2 min
    took = time.monotonic() - started
    assert "timed out after 1 s (body too slow)" in report.failed[0]["reason"]
    assert took < 5, f"a 1 s deadline held the download {took:.1f} s"


@pytest.mark.parametrize(
    "line,reason",
    [
        ("http://[zz]/a.png", "not a valid URL"),
        ("http://example.com:99999999/a.png", "not a valid URL"),
        ("http://exa\x1b[31mmple.com/\x07a.png", "not a valid URL"),
    ],
    ids=["bad-ipv6-host", "bad-port", "control-characters"],
)
def test_a_malformed_url_fails_alone_with_a_printable_reason(ws: Workspace, web: str, line: str, reason: str) -> None:
    report = download.download_url_text(ws, f"{line}\n{web}/img/5.png\n", "cat", FAST)
    assert len(report.added) == 1, "one bad URL must not stop the others"
    assert reason in report.failed[0]["reason"]
    assert all(c.isprintable() for c in report.failed[0]["reason"])
    assert len(store.images(ws)) == 1 and not [p for p in (ws.images_dir / "cat").iterdir() if p.name.startswith(".")]


def test_the_download_connects_to_the_address_it_checked(ws: Workspace, web: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name resolves to a public address when checked, then to this machine. The request must
    go to the checked address (unreachable here), never to the private one a second lookup would give."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host: str, *args: object, **kwargs: object) -> list:
        if host != "rebind.test":
            return real(host, *args, **kwargs)
        asked.append(host)
        address = "93.184.216.34" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = urlsplit(web).port
    report = download.download_images(ws, [UrlItem(f"http://rebind.test:{port}/img/3.png")], "cat", FAST)
    assert report.added == [] and asked == ["rebind.test"]  # looked up once, and not followed to 127.0.0.1
    assert report.failed[0]["reason"].startswith(("connection failed", "timed out"))


TLS = Path(__file__).resolve().parent / "data" / "tls"  # a self-signed certificate for rebind.test, for tests only


def test_https_to_the_checked_address_still_verifies_the_host_name(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Pinning connects by address, yet TLS must still present and verify the URL's host name: the certificate
    for rebind.test is accepted for https://rebind.test/..., and refused when the URL names the address."""

    class Images(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = png_bytes(5)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "rebind.test.crt", TLS / "rebind.test.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real = socket.getaddrinfo

    def resolve(host: str, *args: object, **kwargs: object) -> list:
        if host == "rebind.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TLS / "rebind.test.crt"))
    try:
        report = download.download_images(
            ws, [UrlItem(f"https://rebind.test:{port}/a.png"), UrlItem(f"https://127.0.0.1:{port}/b.png")], "cat", FAST
        )
    finally:
        server.shutdown()
    assert len(report.added) == 1 and store.images(ws)["url"].tolist() == [f"https://rebind.test:{port}/a.png"]
    assert report.failed[0]["source"] == f"https://127.0.0.1:{port}/b.png"
    assert report.failed[0]["reason"] == "connection failed: SSLError"


def test_a_binary_file_given_as_a_url_list_is_refused_as_a_whole(ws: Workspace, tmp_path: Path) -> None:
    from tests.helpers import cli

    before = len(store.audit_log(ws, limit=1000))
    for name, data in (("photo.png", png_bytes(3)), ("notes.txt", b"just some words\nno links here\n")):
        (tmp_path / name).write_bytes(data)
        done = cli("gather", "--workspace", str(ws.root), "--urls", str(tmp_path / name), "--label", "cat")
        assert done.returncode == 2 and "not a list of image URLs" in done.stderr and len(done.stderr) < 400, done.stderr
    assert len(store.audit_log(ws, limit=1000)) == before and store.images(ws).empty
