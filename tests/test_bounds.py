"""Every numeric flag and setting is checked against one table before any work starts: the flags an adversarial
run found unbounded are refused with exit status 2 and a message naming the flag and its range, nothing changes,
and a training config from a page is refused by the same table before a run is recorded."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from core import bounds
from core.errors import UserError
from core.model import config, registry, runs
from core.workspace import store, workspaces
from tests.helpers import TINY, cli, fill

REFUSED = [  # (args, the flag the message must name)
    (("gather", "--workspace", "w", "--urls", "list.txt", "--timeout", "inf"), "--timeout"),
    (("gather", "--workspace", "w", "--urls", "list.txt", "--timeout", "nan"), "--timeout"),
    (("predict", "--workspace", "w", "x.png", "--batch-size", "0"), "--batch-size"),
    (("predict", "--workspace", "w", "x.png", "--batch-size", "-1"), "--batch-size"),
    (("review", "--workspace", "w", "--limit", "-1"), "--limit"),
    (("train", "--workspace", "w", "--lr", "-1"), "--lr"),
    (("train", "--workspace", "w", "--batch-size", "0"), "--batch-size"),
    (("train", "--workspace", "w", "--label-smoothing", "2"), "--label-smoothing"),
    (("train", "--workspace", "w", "--label-smoothing", "-0.5"), "--label-smoothing"),
    (("train", "--workspace", "w", "--epochs", "2.5"), "--epochs"),
    (("split", "--workspace", "w", "--draw-test", "-0.5"), "--draw-test"),
    (("serve", "--workspace", "w", "--port", "70000"), "--port"),
    (("simulate", "--workspace", "w", "--per-day", "0"), "--per-day"),
    (("rollout", "--workspace", "w", "--limited", "v2", "--share", "1.5"), "--share"),
]


@pytest.mark.parametrize(("args", "flag"), REFUSED, ids=[" ".join(a[:1] + a[3:]) for a, _ in REFUSED])
def test_an_out_of_range_flag_is_refused_before_the_command_runs(args: tuple[str, ...], flag: str) -> None:
    ws = workspaces.resolve("w", create=True)
    fill(ws, {"red": 3, "blue": 3})
    before = store.audit_log(ws, limit=1000)
    done = cli(*args)
    assert done.returncode == 2 and flag in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(store.audit_log(ws, limit=1000)) == len(before)  # nothing ran


def test_a_page_config_out_of_range_is_refused_before_a_run_is_recorded() -> None:
    ws = workspaces.resolve("w", create=True)
    fill(ws, {"red": 6, "blue": 6})
    for bad in (replace(TINY, lr=-1.0), replace(TINY, label_smoothing=-0.5), replace(TINY, batch_size=0),
                replace(TINY, label_smoothing=math.nan)):  # fmt: skip
        with pytest.raises(UserError, match="takes a"):
            runs.train_workspace(ws, bad)
    with store.connect(ws) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    assert registry.list_versions(ws).empty and not (ws.root / runs.LOCK).exists()


def test_a_bound_refuses_what_is_not_a_finite_number_in_range() -> None:
    b = bounds.BOUNDS["label_smoothing"]
    assert b.check(0.0, "x") == 0.0 and b.check(0.1, "x") == 0.1
    for bad in (1.0, -0.1, math.inf, math.nan, True):
        with pytest.raises(UserError, match="x takes a number at least 0 and below 1"):
            b.check(bad, "x")
    assert bounds.BOUNDS["batch_size"].check(8.0, "n") == 8 and isinstance(bounds.BOUNDS["batch_size"].check(8.0, "n"), int)
    with pytest.raises(UserError):
        bounds.BOUNDS["batch_size"].check(8.5, "n")
    config.check_train(TINY)  # the test suite's own tiny recipe is within bounds
