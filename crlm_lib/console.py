"""Stage lines of a long command: ``[  4.2 s] CRLM-CT-1001: Grad-CAM, 12 years``.

``crlm predict`` names each stage and each patient as it starts, with the seconds since the
command began, on standard error (standard output keeps the results). A disabled console
(``enabled=False``: tests, library calls with ``progress=False``) prints nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["Console"]


@dataclass
class Console:
    """Prints ``[seconds] <patient>: <stage>`` lines; ``started`` is the reference time
    (``time.perf_counter``), by default when the console was made."""

    enabled: bool = True
    stream: TextIO | None = None
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since :attr:`started`."""
        return time.perf_counter() - self.started

    def stage(self, what: str, patient: str | None = None) -> None:
        """Print one stage line (``patient`` first when given)."""
        if not self.enabled:
            return
        who = f"{patient}: " if patient else ""
        print(f"[{self.elapsed():6.1f} s] {who}{what}", file=self.stream or sys.stderr, flush=True)
