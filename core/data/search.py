"""Web image search: DuckDuckGo through ddgs (no key) or Bing Image Search (key in the environment)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import requests

from core.data.download import DownloadConfig, UrlItem, download_images
from core.data.gather import GatherReport, validate_label
from core.errors import UserError
from core.progress import ProgressFn
from core.workspace.paths import Workspace

BING_KEY_ENV = "BING_SEARCH_KEY"
BING_ENDPOINT_ENV = "BING_SEARCH_ENDPOINT"
BING_DEFAULT_ENDPOINT = "https://api.bing.microsoft.com/v7.0/images/search"
PROVIDERS = ("duckduckgo", "bing")
OTHER_WAYS = (
    "Other ways to bring images in: paste or upload a list of image URLs, upload image files "
    "or a zip archive, import a folder of <label>/<image> files, or start from the demo dataset."
)


@dataclass(frozen=True)
class SearchConfig:
    provider: str = "duckduckgo"
    max_results: int = 50  # per query
    timeout_s: float = 10.0
    proxy: str | None = None  # e.g. http://proxy:3128, for networks that need one


def expand_queries(label: str, extra: Sequence[str] = ()) -> list[str]:
    """Several phrasings per label, as the course does ("grizzly bear", "grizzly bear photo")."""
    base = [q.strip() for q in extra if q.strip()] or [label]
    out = []
    for q in base:
        out += [q, f"{q} photo"]
    return list(dict.fromkeys(out))


def _offline(provider: str, exc: Exception | str) -> UserError:
    detail = str(exc).split(":")[0][:60] or type(exc).__name__
    return UserError(
        f"Image search with {provider} failed ({detail}): you may be offline, or the search "
        f"is blocked from this network. {OTHER_WAYS}"
    )


def _duckduckgo(query: str, cfg: SearchConfig) -> list[str]:
    from ddgs import DDGS
    from ddgs.exceptions import DDGSException

    try:
        hits = DDGS(proxy=cfg.proxy, timeout=int(cfg.timeout_s)).images(query, max_results=cfg.max_results, backend="duckduckgo")
    except DDGSException as exc:
        if "no results" in str(exc).lower():
            return []
        raise _offline("DuckDuckGo", exc) from None
    return [h["image"] for h in hits if h.get("image")]


def _bing(query: str, cfg: SearchConfig) -> list[str]:
    key = os.environ.get(BING_KEY_ENV, "").strip()
    if not key:
        raise UserError(
            f"Bing Image Search needs a key in the environment variable {BING_KEY_ENV}; or choose DuckDuckGo, which needs none."
        )
    endpoint = os.environ.get(BING_ENDPOINT_ENV, BING_DEFAULT_ENDPOINT)
    try:
        response = requests.get(
            endpoint,
            params={"q": query, "count": cfg.max_results},
            headers={"Ocp-Apim-Subscription-Key": key},
            timeout=cfg.timeout_s,
        )
    except requests.RequestException as exc:
        raise _offline("Bing", type(exc).__name__) from None
    if response.status_code in (401, 403):
        raise UserError(f"Bing refused the key in {BING_KEY_ENV} (HTTP {response.status_code}); check it.")
    if response.status_code != 200:
        raise _offline("Bing", f"HTTP {response.status_code}")
    try:
        values = response.json().get("value", [])
    except ValueError:
        raise _offline("Bing", "the answer was not JSON") from None
    return [v["contentUrl"] for v in values[: cfg.max_results] if v.get("contentUrl")]


def search_images(queries: Sequence[str], cfg: SearchConfig = SearchConfig()) -> list[UrlItem]:
    """Image URLs for every query (each keeps its query), without repeats."""
    if cfg.provider not in PROVIDERS:
        raise UserError(f"Unknown search provider {cfg.provider!r}; choose one of {', '.join(PROVIDERS)}.")
    run = _duckduckgo if cfg.provider == "duckduckgo" else _bing
    found: dict[str, UrlItem] = {}
    for query in queries:
        for url in run(query, cfg):
            found.setdefault(url, UrlItem(url, query))
    if not found:
        raise UserError(f"The search found no images for {', '.join(map(repr, queries))}. {OTHER_WAYS}")
    return list(found.values())


def search_and_download(
    ws: Workspace,
    label: str,
    queries: Sequence[str],
    cfg: SearchConfig = SearchConfig(),
    download_cfg: DownloadConfig = DownloadConfig(),
    on_progress: ProgressFn | None = None,
) -> GatherReport:
    """Search the web for label (and each extra query) and download what it finds into label."""
    found = search_images(expand_queries(validate_label(label), queries), cfg)
    return download_images(ws, found, label, download_cfg, on_progress=on_progress, source_kind="search")
