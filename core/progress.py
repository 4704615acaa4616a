"""The one progress callback every stage reports through: (done, total, message). Pages turn it into a
progress bar, the command line into lines on stderr, tests into a list."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int, str], None]
