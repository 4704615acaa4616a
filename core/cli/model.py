"""`python -m core train` and `python -m core models`: fine-tune, list, promote, roll back."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import replace
from typing import Any

from core import bounds
from core.errors import UserError
from core.model.config import TrainConfig
from core.model.events import Cancelled, EpochMetrics, EventFn, StageEvent, TrainEvent
from core.workspace import paths, workspaces


def _epoch_printer(stream: Any) -> EventFn:
    def show(event: TrainEvent) -> None:
        if isinstance(event, EpochMetrics):
            print(
                f"epoch {event.epoch} {event.stage:<8} train_loss {event.train_loss:.4f}  "
                f"valid_loss {event.valid_loss:.4f}  error_rate {event.error_rate:.4f}  "
                f"accuracy {event.accuracy:.4f}  {event.seconds:.1f}s",
                file=stream,
                flush=True,
            )
        elif isinstance(event, StageEvent):
            print(f"... {event.message}", file=stream, flush=True)

    return show


DATA_FLAGS = ("size", "resize", "min_scale", "flip")
TRAIN_FLAGS = ("backbone", "freeze_epochs", "epochs", "lr", "body_lr_factor", "label_smoothing", "seed", "batch_size")


def _epochs(value: str) -> int | str:
    if value == "auto":
        return value
    return bounds.arg("epochs", "--epochs")(value)


def config_from_args(ws: paths.Workspace, args: argparse.Namespace) -> TrainConfig:
    """The workspace's saved training settings, overridden by the flags given."""
    from core.model import runs

    cfg = runs.defaults(ws)
    given = {k: v for k, v in vars(args).items() if v is not None}
    data = replace(cfg.data, **{k: given[k] for k in DATA_FLAGS if k in given})
    cfg = replace(cfg, data=data, **{k: given[k] for k in TRAIN_FLAGS if k in given})
    if given.get("epochs") == "auto":
        cfg = replace(cfg, epochs=None)
    if args.allow_model_labels:
        cfg = replace(cfg, allow_model_labels=True)
    return replace(cfg, pretrained=False) if args.random_init else cfg


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from core.model import registry, runs

    ws = workspaces.resolve(args.workspace)
    cfg = config_from_args(ws, args)
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())  # Ctrl-C stops cleanly, saves nothing
    try:
        summary = runs.train_workspace(ws, cfg, _epoch_printer(sys.stderr if args.json else sys.stdout), cancel)
    except Cancelled:
        raise UserError("Training cancelled; no model version was written.") from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.promote:
        registry.promote(ws, summary["version"])
    return {
        **summary,
        "epochs": len(summary["epochs"]),
        "history": summary["epochs"],
        "production": registry.production_version(ws),
    }


def cmd_models(args: argparse.Namespace) -> dict[str, Any]:
    from core.model import registry

    ws = workspaces.resolve(args.workspace)
    if args.promote:
        registry.promote(ws, args.promote)
    elif args.rollback:
        registry.rollback(ws)
    versions = registry.list_versions(ws)
    return {
        "versions": json.loads(versions.to_json(orient="records", date_format="iso")),
        "production": registry.production_version(ws),
    }


def default_version(ws: paths.Workspace, requested: str | None) -> str:
    """The requested version, else production, else the newest."""
    from core.model import registry

    if requested:
        return requested
    versions = registry.list_versions(ws)
    if versions.empty:
        raise UserError("This workspace has no model yet: train one first (python -m core train --workspace ...).")
    return registry.production_version(ws) or versions["version"].iloc[-1]


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from core.model import evaluation

    ws = workspaces.resolve(args.workspace)
    return evaluation.report(ws, default_version(ws, args.model))


def print_evaluate(data: dict[str, Any]) -> None:
    print(
        f"version {data['version']}: accuracy {data['accuracy']:.4f} on {data['images']} validation images "
        f"(optimistic: they chose the epoch), expected calibration error {data['ece']:.3f}"
    )
    if data["test"]:
        print(f"test: accuracy {data['test_accuracy']:.4f} on {data['test_images']} held-out images (reporting only)")
    else:
        print("test: no held-out images (python -m core split --draw-test)")
    width = max(len(c) for c in data["classes"]) + 2
    print("confusion matrix (rows actual, columns predicted)")
    print(" " * width + "".join(f"{c:>{width}}" for c in data["classes"]))
    for name, row in zip(data["classes"], data["confusion_matrix"], strict=True):
        print(f"{name:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    for row in data["per_class"]:
        print(
            f"{row['class']:>{width}}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
            f"f1 {row['f1']:.3f}  support {row['support']}"
        )
    for pair in data["most_confused"]:
        print(f"confused: {pair['actual']} taken for {pair['predicted']} x{pair['count']}")


def print_train(data: dict[str, Any]) -> None:
    for note in data.get("split_notes", []):
        print(f"split: {note}")
    test = (
        f"test accuracy {data['test_accuracy']:.4f} on {data['test_images']} held-out images"
        if data.get("test_accuracy") is not None
        else "no test images (python -m core split --draw-test)"
    )
    print(
        f"version {data['version']}: {data['backbone']} at {data['size']} px, valid accuracy "
        f"{data['valid_accuracy']:.4f} (error {data['valid_error']:.4f}, best epoch {data['best_epoch']}; "
        f"optimistic: it chose the epoch), {test}, {data['wall_seconds']:.1f} s"
    )


def print_models(data: dict[str, Any]) -> None:
    for v in data["versions"]:
        mark = "*" if v["version"] == data["production"] else " "
        print(f"{mark} {v['version']:<5} {v['backbone']:<22} accuracy {v['valid_accuracy']:.4f}  {v['created_at']}")
    if not data["versions"]:
        print("no model versions yet: python -m core train --workspace ...")


def add_commands(command: Any) -> None:
    t = command("train", "fine-tune a pretrained network and register a new model version", cmd_train, print_train)
    t.add_argument(
        "--backbone", help="tf_efficientnet_lite0 (default, offline), resnet18/34/50, mobilenet_v3_large, convnext_tiny"
    )
    t.add_argument("--random-init", action="store_true", help="start from random weights instead of ImageNet")
    t.add_argument(
        "--epochs",
        type=_epochs,
        help="unfrozen epochs, whole network, or 'auto' (default: auto, "
        f"{TrainConfig.auto_epochs} when frozen features leave over {TrainConfig.auto_threshold * 100:.0f}%% error)",
    )
    t.add_argument(
        "--freeze-epochs",
        type=bounds.arg("freeze_epochs", "--freeze-epochs"),
        help=f"head-only epochs first (default {TrainConfig.freeze_epochs})",
    )
    t.add_argument("--size", type=bounds.arg("size", "--size"), help="pixels per side (default: automatic)")
    t.add_argument("--resize", help="crop, squish (default) or pad")
    t.add_argument(
        "--seed", type=bounds.arg("seed", "--seed"), help="training seed (default 42); the split is the workspace's: see `split`"
    )
    t.add_argument(
        "--min-scale", type=bounds.arg("min_scale", "--min-scale"), help="random resized crop: smallest share kept (default 0.5)"
    )
    t.add_argument("--flip", action=argparse.BooleanOptionalAction, help="horizontal flips (default on; the demo: off)")
    t.add_argument("--lr", type=bounds.arg("lr", "--lr"), help=f"head learning rate (default {TrainConfig.lr})")
    t.add_argument(
        "--body-lr-factor",
        type=bounds.arg("body_lr_factor", "--body-lr-factor"),
        help=f"body rate / head rate (default {TrainConfig.body_lr_factor})",
    )
    t.add_argument("--label-smoothing", type=bounds.arg("label_smoothing", "--label-smoothing"), help="e.g. 0.1 (default 0)")
    t.add_argument("--batch-size", type=bounds.arg("batch_size", "--batch-size"), help=f"default {TrainConfig.batch_size}")
    t.add_argument("--promote", action="store_true", help="make the new version the production model")
    t.add_argument(
        "--allow-model-labels",
        action="store_true",
        help="train on production images only the model labelled (refused by default: a feedback loop)",
    )

    e = command("evaluate", "confusion matrix, per-class metrics, calibration of a model version", cmd_evaluate, print_evaluate)
    e.add_argument("--model", metavar="VERSION", help="default: the production model, else the newest")

    m = command("models", "list model versions; promote one or roll back production", cmd_models, print_models)
    m.add_argument("--promote", metavar="VERSION")
    m.add_argument("--rollback", action="store_true")
