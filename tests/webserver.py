"""A real HTTP server on 127.0.0.1 standing in for the web: good images and every way to fail."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

from tests.helpers import encode, picture, png_bytes

NOISE = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)), "PNG")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def send(self, code: int, body: bytes, ctype: str = "image/png", length: bool = True) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def trickle(self, piece: bytes, times: int, pause_s: float) -> None:
        """Headers promising 100 kB, then `piece` every `pause_s` seconds, `times` times (the client may go away)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(times):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(pause_s)
        except OSError:
            pass

    def redirect(self, where: str) -> None:
        self.send_response(302)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: C901 - a routing table
        parts = urlsplit(self.path)
        path = parts.path
        Handler.hits[path] = Handler.hits.get(path, 0) + 1
        if path.startswith("/img/"):
            self.send(200, png_bytes(int(path.split("/")[-1].split(".")[0]), (96, 64)))
        elif path.startswith("/slowimg/"):  # a distinct image after a short wait: a download that takes a while
            time.sleep(0.05)
            self.send(200, png_bytes(int(path.split("/")[-1].split(".")[0]), (96, 64)))
        elif path.startswith("/copy/"):
            self.send(200, png_bytes(1, (96, 64)))
        elif path == "/page.jpg":
            self.send(200, b"<html><body>Just a web page</body></html>", "text/html; charset=utf-8")
        elif path == "/webp.jpg":
            self.send(200, encode(picture(40, (96, 64)), "WEBP"), "image/jpeg")
        elif path == "/slow.png":
            time.sleep(3)
            self.send(200, png_bytes(2))
        elif path == "/trickle.png":
            self.trickle(b"\0" * 10, 40, 0.1)
        elif path == "/drip.png":  # a byte at a time, for two minutes: only a whole-request deadline stops it
            self.trickle(b"\0", 600, 0.2)
        elif path == "/loop":
            self.redirect("/loop")
        elif path == "/to-metadata":  # a public-looking page that sends the client to the cloud metadata address
            self.redirect("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
        elif path == "/redirect":
            self.redirect("/img/5.png")
        elif path == "/big.png":
            self.send(200, NOISE)
        elif path == "/big-nolength.png":
            self.send(200, NOISE, length=False)
            self.close_connection = True
        elif path == "/bing":
            query = parse_qs(parts.query)
            if self.headers.get("Ocp-Apim-Subscription-Key") != "good-key":
                self.send(401, b'{"error": "bad key"}', "application/json")
                return
            count = int(query["count"][0])
            values = [{"contentUrl": f"http://127.0.0.1:{self.server.server_port}/img/{100 + i}.png"} for i in range(count)]
            self.send(200, json.dumps({"value": values}).encode(), "application/json")
        else:
            self.send(404, b"not found", "text/plain")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a killed download) is expected here; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve() -> Iterator[str]:
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
