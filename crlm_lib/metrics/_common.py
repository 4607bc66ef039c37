"""What every metric module shares: :class:`MetricWarning` and the NaN it marks."""

from __future__ import annotations

import math
import warnings


class MetricWarning(UserWarning):
    """A metric could not be estimated on these data and was returned as NaN."""


def _warn_nan(metric: str, why: str) -> float:
    warnings.warn(f"{metric} is NaN: {why}", MetricWarning, stacklevel=3)
    return math.nan
