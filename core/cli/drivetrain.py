"""`python -m core policy`: the simulator for the current decision policy; --optimize, --accept."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from core import bounds
from core.workspace import workspaces


def cmd_policy(args: argparse.Namespace) -> dict[str, Any]:
    from core.drivetrain import accepted, decisions, optimizer, summary

    ws = workspaces.resolve(args.workspace)
    v = optimizer.validation(ws, args.model)
    force = accepted.in_force(ws, v)
    policy, utility = force.policy, force.utility
    data: dict[str, Any] = {
        "version": v.version,
        "unit": utility.unit,
        "actions": list(utility.actions),
        "policy": {"id": force.policy_id, **asdict(policy), "description": summary.describe(policy), "stale": force.stale},
        "validation": [
            decisions.outcome_dict(o) for o in decisions.policy_and_baselines(utility, policy, v.logits, v.labels, v.ood)
        ],
    }
    if args.optimize or args.accept:
        search = optimizer.optimize(utility, v, seed=args.seed, use_ood=not args.no_ood_rule)
        data["optimized"] = {
            **asdict(search.policy),
            "description": summary.describe(search.policy),
            "fit_images": search.fit_images,
            "report_images": search.report_images,
            "fit": [decisions.outcome_dict(o) for o in search.fit],
            "held_out": [decisions.outcome_dict(o) for o in search.report],
            "held_out_interval_per_image": list(search.interval),
            "temperature_fitted": search.temperature_fitted,
            "temperature_used": search.temperature_used,
            "seed": search.seed,
            "report_ids": list(search.report_ids),
        }
        if args.accept:
            data["accepted"] = accepted.accept_search(ws, v.version, search, utility)
    return data


def _rows(outcomes: list[dict[str, Any]], unit: str) -> None:
    for o in outcomes:
        print(
            f"  {o['policy']:<28} {o['utility_per_1000_images']:>12,.0f} {unit}/1,000 images"
            f"  automated {o['automation_rate']:6.1%}  errors among automated {o['automated_error_rate']:6.1%}"
        )


def print_policy(data: dict[str, Any]) -> None:
    pol = data["policy"]
    print(f"model {data['version']}: {'accepted' if pol['id'] else 'default'} policy: {pol['description']}")
    print("on all validation images:")
    _rows(data["validation"], data["unit"])
    if "optimized" in data:
        o = data["optimized"]
        low, high = o["held_out_interval_per_image"]
        print(f"optimized on {o['fit_images']} images: {o['description']}")
        print(f"on the {o['report_images']} held-out images (95% interval {low * 1000:,.0f} to {high * 1000:,.0f} per 1,000):")
        _rows(o["held_out"], data["unit"])
    if "accepted" in data:
        print(f"accepted as policy {data['accepted']}: Predict, batch scoring and the simulator now use it")


def add_commands(command: Any) -> None:
    p = command("policy", "simulate the decision policy on validation; optimize and accept one", cmd_policy, print_policy)
    p.add_argument("--optimize", action="store_true", help="fit thresholds and temperature on half, report on the other")
    p.add_argument("--accept", action="store_true", help="optimize, then accept the result for the model version")
    p.add_argument("--model", metavar="VERSION", help="default: the production model")
    p.add_argument("--seed", type=bounds.arg("seed", "--seed"), default=0, help="the fit/report split and the bootstrap")
    p.add_argument(
        "--no-ood-rule", action="store_true", help="let out-of-domain flags pass (default: they take the OOD row's action)"
    )
