"""A rate from a sample, as every page shows it: the share, its 95% Wilson interval and its n, or "too few (n)"
when n is too small for the share to mean anything as a headline."""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_N = 30  # below this many items, a rate is "too few (n)", never a headline
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    k: int  # items that count (correct, agreed, flagged)
    n: int  # items in all

    @classmethod
    def of(cls, share: float | None, n: int) -> Rate:
        """The rate behind a share of n items (a share a query averaged; None counts as 0 of n)."""
        return cls(round((share or 0.0) * n), int(n))

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval (sound at 0 or n of n, unlike the normal approximation)."""
        return wilson(self.k, self.n)

    @property
    def enough(self) -> bool:
        return self.n >= MIN_N

    def text(self, digits: int = 1) -> str:
        """'95.6% (95% CI 90.2-98.1%, n 90)', or 'too few (n 2)'."""
        if not self.enough:
            return f"too few (n {self.n})"
        return f"{self.value:.{digits}%} ({self.ci(digits)}, n {self.n:,})"

    def ci(self, digits: int = 1) -> str:
        low, high = self.interval
        return f"95% CI {low * 100:.{digits}f}-{high * 100:.{digits}f}%"

    def short(self, digits: int = 1) -> str:
        """The headline alone ('95.6%'), or 'too few (n 2)'."""
        return f"{self.value:.{digits}%}" if self.enough else f"too few (n {self.n})"


def points(difference: float, digits: int = 1) -> str:
    """A difference of two rates in signed percentage points ('+4.6', '-1.2', '+0.0': never '-0.0')."""
    return f"{round(difference * 100, digits) + 0.0:+.{digits}f}"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials ((nan, nan) for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
