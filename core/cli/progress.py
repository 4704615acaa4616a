"""One progress printer for every command: stderr, so stdout stays for the summary."""

from __future__ import annotations

import sys

from core.progress import ProgressFn


def printer(enabled: bool, label: str = "") -> ProgressFn | None:
    """Progress on stderr every tenth of the way; None when disabled (for --json)."""
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
