"""`python -m core gather` and `verify`: bring images into a workspace, check them, report duplicates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core import bounds
from core.cli.progress import printer
from core.errors import UserError, printable
from core.workspace.paths import Workspace


def summary(ws: Workspace, failed: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    from core.workspace import store

    labels = store.label_counts(ws)
    return {
        "workspace": str(ws.root),
        "images": sum(labels.values()),
        "labels": labels,
        "quarantined": store.quarantined_count(ws),
        "failed": [{"source": f["source"], "reason": f["reason"]} for f in failed],
        **extra,
    }


def print_summary(data: dict[str, Any]) -> None:
    print(f"{data['images']} images in {len(data['labels'])} labels: " + ", ".join(f"{k} {v}" for k, v in data["labels"].items()))
    for key in ("added", "adopted"):
        if key in data:
            print(f"{key}: {len(data[key]) if isinstance(data[key], list) else data[key]}")
    for item in data.get("skipped", []):
        print(f"skipped {printable(item['source'])}: {printable(item['reason'])}")
    for item in data["failed"]:
        print(f"failed  {printable(item['source'])}: {printable(item['reason'])}")
    print(f"quarantined: {data['quarantined']}")
    for warning in data.get("warnings", []):
        print(f"warning: {warning}")


def read_file(path: Path) -> bytes:
    """A file the user named, or UserError saying why it cannot be read."""
    if not path.is_file():
        raise UserError(f"No file at {path}.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"Cannot read {path}: {exc.strerror or exc}.") from None


def cmd_gather(args: argparse.Namespace) -> dict[str, Any]:
    from core.data import download, gather, search
    from core.workspace import workspaces

    sources = [args.demo, args.folder, args.search, args.urls, args.zip]
    if sum(bool(s) for s in sources) != 1:
        raise UserError("Choose exactly one source: --demo, --folder DIR, --search QUERY, --urls FILE or --zip FILE.")
    ws = workspaces.resolve(args.workspace, create=True)
    progress = printer(not args.json)
    dl = download.DownloadConfig(
        workers=args.workers, timeout_s=args.timeout, max_bytes=args.max_bytes, allow_private=tuple(args.allow_private)
    )
    if args.demo:
        classes = [c for c in (args.classes or "").split(",") if c.strip()] or None
        report = gather.add_demo(ws, classes, on_progress=progress)
    elif args.folder:
        report = gather.import_folder(ws, args.folder, args.label, on_progress=progress)
    elif args.zip:
        archive = gather.zip_items(read_file(Path(args.zip)), args.label, Path(args.zip).name)
        report = gather.ingest(ws, archive, on_progress=progress)
    elif not args.label:
        raise UserError("--label is required with --search and --urls (the class these images show).")
    elif args.search:
        cfg = search.SearchConfig(provider=args.provider, max_results=args.max)
        report = search.search_and_download(ws, args.label, args.search, cfg, dl, on_progress=progress)
    else:
        report = download.download_url_text(ws, read_file(Path(args.urls)).decode(errors="replace"), args.label, dl, progress)
    return summary(ws, report.failed, added=report.added, skipped=report.skipped)


def cmd_verify(args: argparse.Namespace) -> dict[str, Any]:
    from core.data import verify
    from core.data.images import VerifyConfig
    from core.workspace import store, workspaces

    ws = workspaces.resolve(args.workspace)
    report = verify.verify_workspace(ws, VerifyConfig(min_side=args.min_side), on_progress=printer(not args.json))
    catalog = store.images(ws)
    return summary(
        ws,
        report.failed,
        checked=report.checked,
        adopted=report.adopted,
        newly_quarantined=report.quarantined,
        warnings=report.warnings,
        exact_duplicates=verify.exact_duplicate_groups(catalog),
        near_duplicates=verify.near_duplicate_groups(catalog, args.max_distance),
    )


def network(text: str) -> str:
    """A CIDR network such as 127.0.0.1/32 or 10.0.0.0/8."""
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a network such as 127.0.0.1/32: {text!r}") from None
    return text


def add_commands(command: Any) -> None:
    g = command("gather", "bring images into a workspace (created if missing)", cmd_gather, print_summary)
    g.add_argument("--demo", action="store_true", help="scikit-learn's bundled handwritten digits")
    g.add_argument("--classes", help="demo subset, e.g. 0,1,7")
    g.add_argument("--folder", help="a folder of <label>/<image> files")
    g.add_argument("--zip", help="a zip archive of images (labels from --label or its folders)")
    g.add_argument("--search", action="append", help="image search query (repeatable)")
    g.add_argument("--provider", default="duckduckgo", help="duckduckgo (no key) or bing ($BING_SEARCH_KEY)")
    g.add_argument("--max", type=bounds.arg("results", "--max"), default=50, help="search results per query")
    g.add_argument("--urls", help="a text file with one image URL per line")
    g.add_argument("--label", help="the label for --search, --urls, --zip or a flat --folder")
    g.add_argument("--workers", type=bounds.arg("workers", "--workers"), default=8, help="concurrent downloads")
    g.add_argument("--timeout", type=bounds.arg("timeout", "--timeout"), default=15.0, help="seconds per download, whole request")
    g.add_argument(
        "--max-bytes", type=bounds.arg("max_bytes", "--max-bytes"), default=20_000_000, help="largest download accepted"
    )
    g.add_argument(
        "--allow-private",
        action="append",
        type=network,
        default=[],
        metavar="CIDR",
        help="allow downloads from this private network, e.g. 127.0.0.1/32",
    )

    v = command("verify", "check every image; quarantine the broken; report duplicates", cmd_verify, print_summary)
    v.add_argument("--min-side", type=bounds.arg("min_side", "--min-side"), default=32, help="smallest width or height accepted")
    v.add_argument(
        "--max-distance",
        type=bounds.arg("max_distance", "--max-distance"),
        default=4,
        help="perceptual-hash bits for near duplicates",
    )

    s = command("split", "the train / valid / test split: counts; draw a test set; re-split", cmd_split, print_split)
    s.add_argument(
        "--draw-test",
        nargs="?",
        const=-1.0,
        type=bounds.arg("share", "--draw-test"),
        metavar="SHARE",
        help="move this share of all images (default: the plan's test share) from train into test, "
        "for workspaces made before test sets existed",
    )
    s.add_argument("--resplit", action="store_true", help="re-split every image not placed by a folder under a new plan")
    s.add_argument("--seed", type=bounds.arg("seed", "--seed"), help="with --resplit: the split seed")
    s.add_argument("--valid", type=bounds.arg("split_share", "--valid"), help="with --resplit: validation share (default 0.2)")
    s.add_argument("--test", type=bounds.arg("split_share", "--test"), help="with --resplit: test share (default 0.1)")


def cmd_split(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict, replace

    from core.workspace import split_ops, workspaces

    ws = workspaces.resolve(args.workspace)
    done: dict[str, Any] = {}
    if args.draw_test is not None and args.resplit:
        raise UserError("Choose one of --draw-test and --resplit.")
    if args.draw_test is not None:
        done["drawn"] = split_ops.draw_test(ws, None if args.draw_test < 0 else args.draw_test)
    elif args.resplit:
        given = {k: getattr(args, k) for k in ("seed", "valid", "test") if getattr(args, k) is not None}
        done["resplit"] = split_ops.resplit(ws, replace(split_ops.plan_of(ws), **given))
    elif any(getattr(args, k) is not None for k in ("seed", "valid", "test")):
        raise UserError("--seed, --valid and --test change the plan only with --resplit.")
    table = split_ops.counts(ws)
    return {
        "workspace": str(ws.root),
        "plan": asdict(split_ops.plan_of(ws)),
        "splits": {s: int(table.loc["all labels", s]) for s in table.columns},
        "labels": {label: {s: int(n) for s, n in row.items()} for label, row in table.drop("all labels").iterrows()},
        "origins": split_ops.origins(ws),
        **done,
    }


def print_split(data: dict[str, Any]) -> None:
    if "drawn" in data:
        print(f"drew {data['drawn']} test image(s) from training images")
    if "resplit" in data:
        print("re-split: " + ", ".join(f"{k} {v}" for k, v in data["resplit"].items()))
    plan = data["plan"]
    print(f"plan: seed {plan['seed']}, valid {plan['valid']:.0%}, test {plan['test']:.0%}")
    width = max([len(label) for label in data["labels"]] + [10]) + 2
    print(f"{'label':<{width}}{'train':>7}{'valid':>7}{'test':>7}")
    for label, row in [*data["labels"].items(), ("all labels", data["splits"])]:
        print(f"{label:<{width}}{row['train']:>7}{row['valid']:>7}{row['test']:>7}")
    print("how placed: " + ", ".join(f"{k} {v}" for k, v in data["origins"].items()))
    if not data["splits"]["test"]:
        print("no test images: figures on validation are optimistic; draw a test set with --draw-test")
