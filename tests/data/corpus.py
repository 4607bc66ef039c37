"""The case registry shared by the input corpora (``test_corpus_clinical.py``,
``test_corpus_refusals.py``) and ``benchmarks/probe_inputs.py``.

A case is a function ``run(tmp_path, capsys, request)`` that writes its input, runs the loader
or the ``crlm`` command and asserts the exact outcome; its ``name``, ``input`` and ``outcome``
are the row of ``docs/inputs.md`` that describes it. :func:`outcome_kind` says from that text
whether the expected outcome is a refusal (one clear error, an exclusion with its reason) or a
correct result, which is how the probe script counts them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One unusual input and its exact outcome (the row of ``docs/inputs.md``)."""

    name: str
    input: str
    outcome: str
    run: Callable[..., None]

    @property
    def kind(self) -> str:
        return outcome_kind(self.outcome)


class Registry(list[Case]):
    """The cases of one corpus, in the order they are declared (``@CASES.case(...)``)."""

    def case(self, name: str, input: str, outcome: str) -> Callable:
        def register(fn: Callable[..., None]) -> Callable[..., None]:
            self.append(Case(name, input, outcome, fn))
            return fn

        return register


#: An outcome that is a refusal: it starts with an error class, ``exit 2`` or ``excluded``.
_REFUSAL = re.compile(r"^(exit 2|excluded|[A-Z]\w*Error\b|[A-Z]\w*Locked\b)")


def outcome_kind(outcome: str) -> str:
    """``"clear error"`` when the documented outcome is a refusal (a one-line error with exit 2,
    an error naming file, patient or column, an exclusion with its reason), else
    ``"correct"`` (the input loads or runs, with the right values)."""
    return "clear error" if _REFUSAL.match(outcome.strip()) else "correct"
