"""`python -m core <command> --workspace W ...`: the stable command-line contract."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core import cli_model, cli_policy, cli_production, store
from core.errors import UserError
from core.gather import GatherReport, ProgressFn


def _progress(enabled: bool, label: str = "") -> ProgressFn | None:
    """Progress on stderr every tenth of the way (stdout stays for the summary)."""
    if not enabled:
        return None
    state = {"last": -1}
    prefix = f"  {label} " if label else "  "

    def show(done: int, total: int, _: str) -> None:
        step = done * 10 // max(total, 1)
        if step != state["last"] or done == total:
            state["last"] = step
            print(f"{prefix}{done}/{total}", file=sys.stderr, flush=True)

    return show


def _summary(ws: Any, failed: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    labels = store.label_counts(ws)
    return {
        "workspace": str(ws.root),
        "images": sum(labels.values()),
        "labels": labels,
        "quarantined": store.quarantined_count(ws),
        "failed": [{"source": f["source"], "reason": f["reason"]} for f in failed],
        **extra,
    }


def _print_summary(data: dict[str, Any]) -> None:
    print(f"{data['images']} images in {len(data['labels'])} labels: " + ", ".join(f"{k} {v}" for k, v in data["labels"].items()))
    for key in ("added", "adopted"):
        if key in data:
            print(f"{key}: {len(data[key]) if isinstance(data[key], list) else data[key]}")
    for item in data.get("skipped", []):
        print(f"skipped {item['source']}: {item['reason']}")
    for item in data["failed"]:
        print(f"failed  {item['source']}: {item['reason']}")
    print(f"quarantined: {data['quarantined']}")
    for warning in data.get("warnings", []):
        print(f"warning: {warning}")


def cmd_gather(args: argparse.Namespace) -> dict[str, Any]:
    from core import download, gather, search, workspace

    sources = [args.demo, args.folder, args.search, args.urls, args.zip]
    if sum(bool(s) for s in sources) != 1:
        raise UserError("Choose exactly one source: --demo, --folder DIR, --search QUERY, --urls FILE or --zip FILE.")
    ws = workspace.resolve(args.workspace, create=True)
    progress = _progress(not args.json)
    dl = download.DownloadConfig(
        workers=args.workers, timeout_s=args.timeout, max_bytes=args.max_bytes, allow_private=tuple(args.allow_private)
    )
    if args.demo:
        classes = [c for c in (args.classes or "").split(",") if c.strip()] or None
        report = gather.add_demo(ws, classes, on_progress=progress)
    elif args.folder:
        items, failed = gather.folder_items(Path(args.folder), args.label)
        report = GatherReport(failed=failed).merge(gather.ingest(ws, items, on_progress=progress))
        store.record_failures(ws, failed)
    elif args.zip:
        path = Path(args.zip)
        if not path.is_file():
            raise UserError(f"No file at {path}.")
        report = gather.ingest(ws, gather.zip_items(path.read_bytes(), args.label, path.name), on_progress=progress)
    else:
        if not args.label:
            raise UserError("--label is required with --search and --urls (the class these images show).")
        if args.search:
            cfg = search.SearchConfig(provider=args.provider, max_results=args.max)
            urls = search.search_images(search.expand_queries(args.label, args.search), cfg)
            kind = "search"
        else:
            path = Path(args.urls)
            if not path.is_file():
                raise UserError(f"No file at {path}.")
            urls = [download.UrlItem(u) for u in download.parse_url_list(path.read_text(errors="replace"))]
            kind = "url"
        report = download.download_images(ws, urls, args.label, dl, on_progress=progress, source_kind=kind)
    return _summary(ws, report.failed, added=report.added, skipped=report.skipped)


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    from core import verify, workspace
    from core.images import VerifyConfig

    ws = workspace.resolve(args.workspace)
    report = verify.verify_workspace(ws, VerifyConfig(min_side=args.min_side), on_progress=_progress(not args.json))
    catalog = store.images(ws)
    return _summary(
        ws,
        report.failed,
        checked=report.checked,
        adopted=report.adopted,
        newly_quarantined=report.quarantined,
        warnings=report.warnings,
        exact_duplicates=verify.exact_duplicate_groups(catalog),
        near_duplicates=verify.near_duplicate_groups(catalog, args.max_distance),
    )


def cmd_workspace(args: argparse.Namespace) -> dict[str, Any]:
    from core import workspace

    if args.action == "list":
        return {"workspaces": workspace.list_workspaces(), "data_root": str(workspace.data_root())}
    if not args.name:
        raise UserError(f"workspace {args.action} needs a NAME.")
    if args.action == "create":
        return {"created": str(workspace.create_workspace(args.name).root)}
    if args.action == "rename":
        if not args.new_name:
            raise UserError("workspace rename needs NAME NEW_NAME.")
        return {"renamed": str(workspace.rename_workspace(args.name, args.new_name).root)}
    return {"moved_to_trash": str(workspace.delete_workspace(args.name, args.confirm or ""))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Image-classifier data product.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str,
        help_text: str,
        func: Callable[[argparse.Namespace], dict[str, Any]],
        printer: Callable[[dict[str, Any]], None] | None = None,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--workspace", required=name not in ("workspace", "demo"), help="workspace name or folder path")
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
        p.set_defaults(func=func, printer=printer or _print_summary)
        return p

    g = command("gather", "bring images into a workspace (created if missing)", cmd_gather)
    g.add_argument("--demo", action="store_true", help="scikit-learn's bundled handwritten digits")
    g.add_argument("--classes", help="demo subset, e.g. 0,1,7")
    g.add_argument("--folder", help="a folder of <label>/<image> files")
    g.add_argument("--zip", help="a zip archive of images (labels from --label or its folders)")
    g.add_argument("--search", action="append", help="image search query (repeatable)")
    g.add_argument("--provider", default="duckduckgo", help="duckduckgo (no key) or bing ($BING_SEARCH_KEY)")
    g.add_argument("--max", type=int, default=50, help="search results per query")
    g.add_argument("--urls", help="a text file with one image URL per line")
    g.add_argument("--label", help="the label for --search, --urls, --zip or a flat --folder")
    g.add_argument("--workers", type=int, default=8, help="concurrent downloads")
    g.add_argument("--timeout", type=float, default=15.0, help="seconds per download")
    g.add_argument("--max-bytes", type=int, default=20_000_000, help="largest download accepted")
    g.add_argument(
        "--allow-private",
        action="append",
        default=[],
        metavar="CIDR",
        help="allow downloads from this private network, e.g. 127.0.0.1/32",
    )

    v = command("verify", "check every image; quarantine the broken; report duplicates", cmd_verify)
    v.add_argument("--min-side", type=int, default=32, help="smallest width or height accepted")
    v.add_argument("--max-distance", type=int, default=4, help="perceptual-hash bits for near duplicates")

    w = command(
        "workspace",
        "list, create, rename or delete (to trash) workspaces",
        cmd_workspace,
        lambda data: print(json.dumps(data, indent=2)),
    )
    w.add_argument("action", choices=["list", "create", "rename", "delete"])
    w.add_argument("name", nargs="?")
    w.add_argument("new_name", nargs="?")
    w.add_argument("--confirm", help="for delete: the workspace name again")
    cli_model.add_commands(command)
    cli_production.add_commands(command)
    cli_policy.add_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        args.printer(data)
    return 0
