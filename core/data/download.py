"""Fetch image URLs safely: bounded pool, timeouts, size cap, redirect limit, no private hosts."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from core.data.gather import GatherReport, Incoming, Loader, ingest, validate_label
from core.data.images import VerifyConfig
from core.errors import UserError, printable
from core.progress import ProgressFn
from core.workspace import store
from core.workspace.paths import Workspace

USER_AGENT = "imagedp/1.0 (image classifier data product)"


@dataclass(frozen=True)
class DownloadConfig:
    workers: int = 8  # concurrent requests; bounded so we stay polite
    timeout_s: float = 15.0  # whole request, headers to last byte
    connect_timeout_s: float = 5.0
    max_bytes: int = 20_000_000  # bigger bodies are cut off and reported
    max_redirects: int = 5
    allow_private: tuple[str, ...] = ()  # networks allowed despite being private, e.g. "127.0.0.1/32"


@dataclass(frozen=True)
class UrlItem:
    url: str
    query: str | None = None


@dataclass(frozen=True)
class Checked:
    """A URL whose host resolved to addresses that are all allowed, and the one address to connect to."""

    url: str
    hostname: str
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address: the connection goes where the check looked,
        whatever the name resolves to a moment later (DNS rebinding)."""
        parts = urlsplit(self.url)
        host = f"[{self.address}]" if ":" in self.address else self.address
        netloc = host + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()

    @property
    def host_header(self) -> str:
        return urlsplit(self.url).netloc.rsplit("@", 1)[-1]


def _check_host(url: str, cfg: DownloadConfig) -> Checked:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "http://[zz]/a", a port that is not a number, ...
        raise UserError(f"not a valid URL ({exc}): {printable(url, 100)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"not an http(s) URL: {printable(url, 100)}")
    try:
        infos = socket.getaddrinfo(parts.hostname, port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise UserError(f"host {printable(parts.hostname, 100)} not found (offline, or a typo in the URL?)") from None
    allowed = [ipaddress.ip_network(n, strict=False) for n in cfg.allow_private]
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if not ip.is_global and not any(ip in net for net in allowed):
            raise UserError(f"refused: {parts.hostname} resolves to private address {ip}")
    if not infos:
        raise UserError(f"host {printable(parts.hostname, 100)} not found (offline, or a typo in the URL?)")
    return Checked(url, parts.hostname, str(infos[0][4][0]))


class _PinnedTLS(HTTPAdapter):
    """HTTPS to a checked address, with the certificate and SNI still those of the URL's host name."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self.hostname
        kwargs["assert_hostname"] = self.hostname
        super().init_poolmanager(*args, **kwargs)


def fetch(url: str, cfg: DownloadConfig = DownloadConfig()) -> tuple[bytes, str | None]:
    """The body of url and its content type, or UserError with the reason it failed. Each hop's host is resolved
    and checked once, and the request goes to that checked address."""
    deadline = time.monotonic() + cfg.timeout_s
    current = url
    for _ in range(cfg.max_redirects + 1):
        checked = _check_host(current, cfg)
        with requests.Session() as session:
            session.mount("https://", _PinnedTLS(checked.hostname))
            try:
                response = session.get(
                    checked.pinned_url,
                    stream=True,
                    allow_redirects=False,
                    headers={"User-Agent": USER_AGENT, "Host": checked.host_header},
                    timeout=(cfg.connect_timeout_s, max(0.1, deadline - time.monotonic())),
                )
            except requests.Timeout:
                raise UserError(f"timed out after {cfg.timeout_s:.0f} s") from None
            except requests.RequestException as exc:
                raise UserError(f"connection failed: {type(exc).__name__}") from None
            with response:
                if response.is_redirect:
                    current = urljoin(current, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise UserError(f"HTTP {response.status_code} {response.reason or ''}".strip())
                return _read_body(response, cfg, deadline), response.headers.get("content-type")
    raise UserError(f"more than {cfg.max_redirects} redirects")


def _read_body(response: requests.Response, cfg: DownloadConfig, deadline: float) -> bytes:
    """The body, within the size cap and the whole-request deadline. It is read one network read at a time
    (urllib3's read1), so the deadline is checked however slowly the server sends: a byte every few seconds
    never trips the per-read timeout, and 64 KB chunks would wait for the whole chunk."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
        raise UserError(f"too large: {int(declared) / 1e6:.1f} MB > {cfg.max_bytes / 1e6:.0f} MB")
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {cfg.timeout_s:.0f} s (body too slow)")
        try:
            chunk = response.raw.read1(65536, decode_content=True)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            text = "timed out" if "timed out" in str(exc).lower() else type(exc).__name__
            raise UserError(f"download interrupted: {text}") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cfg.max_bytes:
            raise UserError(f"too large: body passed {cfg.max_bytes / 1e6:.0f} MB")
        chunks.append(chunk)


def _url_loader(url: str, cfg: DownloadConfig) -> Loader:
    return lambda: fetch(url, cfg)


def parse_url_list(text: str) -> list[str]:
    """URLs from pasted text or an uploaded file: one per line, blanks and # comments ignored."""
    urls = [line.strip() for line in text.splitlines()]
    return list(dict.fromkeys(u for u in urls if u and not u.startswith("#")))


def download_images(
    ws: Workspace,
    urls: Sequence[UrlItem],
    label: str,
    cfg: DownloadConfig = DownloadConfig(),
    verify: VerifyConfig = VerifyConfig(),
    on_progress: ProgressFn | None = None,
    source_kind: str = "url",
) -> GatherReport:
    """Download URLs into label; already-fetched URLs are skipped, every failure has a reason."""
    label = validate_label(label)
    seen = store.known_keys(ws).urls
    report = GatherReport()
    todo: list[Incoming] = []
    for item in dict((u.url, u) for u in urls).values():
        if item.url in seen:
            report.skipped.append({"source": item.url, "reason": "already downloaded"})
        else:
            todo.append(Incoming(_url_loader(item.url, cfg), label, source_kind, item.url, query=item.query, url=item.url))
    return report.merge(ingest(ws, todo, verify, workers=cfg.workers, on_progress=on_progress))


def download_url_text(
    ws: Workspace, text: str, label: str, cfg: DownloadConfig = DownloadConfig(), on_progress: ProgressFn | None = None
) -> GatherReport:
    """Download the URLs in pasted text or a file's contents (one per line) into label."""
    items = [UrlItem(u) for u in parse_url_list(text)]
    if not items:
        raise UserError("No URLs given: paste one per line or upload a text file of them.")
    if "\x00" in text or "\ufffd" in text or not any(i.url.lower().startswith(("http://", "https://")) for i in items):
        raise UserError(
            "This is not a list of image URLs (binary or unreadable text, or no line starting with http:// or "
            "https://): give a text file with one URL per line. Nothing was downloaded."
        )
    return download_images(ws, items, label, cfg, on_progress=on_progress)
