"""Image search: Bing against a local stand-in, and clear messages when search cannot run."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from core.data import download, search
from core.errors import UserError
from core.workspace import store
from core.workspace.paths import Workspace
from tests.webserver import serve


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    with serve() as base:
        yield base


@pytest.fixture
def bing(web: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(search.BING_ENDPOINT_ENV, f"{web}/bing")
    monkeypatch.setenv(search.BING_KEY_ENV, "good-key")
    return web


def test_expand_queries_adds_a_photo_variant() -> None:
    assert search.expand_queries("grizzly bear") == ["grizzly bear", "grizzly bear photo"]
    assert search.expand_queries("x", ["grizzly", " ", "grizzly bear"]) == [
        "grizzly",
        "grizzly photo",
        "grizzly bear",
        "grizzly bear photo",
    ]


def test_bing_results_download_and_keep_their_query(ws: Workspace, bing: str) -> None:
    found = search.search_images(["grizzly bear"], search.SearchConfig(provider="bing", max_results=4))
    assert len(found) == 4 and {f.query for f in found} == {"grizzly bear"}
    cfg = download.DownloadConfig(allow_private=("127.0.0.1/32",))
    report = download.download_images(ws, found, "grizzly", cfg, source_kind="search")
    assert len(report.added) == 4
    assert set(store.images(ws)["query"]) == {"grizzly bear"}


def test_bing_without_a_key_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(search.BING_KEY_ENV, raising=False)
    with pytest.raises(UserError, match=search.BING_KEY_ENV):
        search.search_images(["x"], search.SearchConfig(provider="bing"))


def test_bing_with_a_wrong_key(bing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(search.BING_KEY_ENV, "wrong")
    with pytest.raises(UserError, match="refused the key"):
        search.search_images(["x"], search.SearchConfig(provider="bing"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("provider", ["duckduckgo", "bing"])
def test_offline_search_names_the_other_ways_in(provider: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a proxy / endpoint on a closed local port: a real network failure, the same with or without internet
    port = closed_port()
    monkeypatch.setenv(search.BING_KEY_ENV, "k")
    monkeypatch.setenv(search.BING_ENDPOINT_ENV, f"http://127.0.0.1:{port}/bing")
    cfg = search.SearchConfig(provider=provider, timeout_s=2, proxy=f"http://127.0.0.1:{port}")
    with pytest.raises(UserError, match="offline") as info:
        search.search_images(["grizzly bear"], cfg)
    assert "upload image files" in str(info.value) and "folder" in str(info.value)


def test_unknown_provider() -> None:
    with pytest.raises(UserError, match="duckduckgo, bing"):
        search.search_images(["x"], search.SearchConfig(provider="altavista"))
