"""The analysis cohort of the protocols: :class:`crlm_lib.types.Cohort` (re-exported here; the
same type as ``pipeline.Study``), :func:`as_cohort`, which takes a :class:`Cohort` or builds one
from a ``config.Paths`` with ``pipeline.build_cohort`` (the one builder), and
:func:`cohort_profile`, the profile of a protocol call read from its cohort."""

from __future__ import annotations

from collections.abc import Sequence

from crlm_lib.config import Paths, Profile, get_profile
from crlm_lib.pipeline import build_cohort, load_oracle
from crlm_lib.types import Cohort

__all__ = ["Cohort", "ProfileMismatchError", "as_cohort", "cohort_profile", "load_oracle"]


class ProfileMismatchError(ValueError):
    """A profile passed beside a cohort that was built for another one."""


def as_cohort(source: Cohort | Paths, ids: Sequence[str] | None = None) -> Cohort:
    """The :class:`Cohort` of ``source`` (a ``Cohort``, e.g. ``pipeline.load_study``'s, or the
    ``config.Paths`` of ``crlm evaluate``), restricted to ``ids`` when given.

    For ``Paths`` the cohort is ``pipeline.build_cohort(source)``: every clinical row with a
    usable preprocessed volume (every clinical row when nothing is preprocessed: anchors
    only), the same patients as ``pipeline.load_study``, with the profile ``source`` names.
    """
    if isinstance(source, Cohort):
        return source if ids is None else source.subset(ids)
    if not isinstance(source, Paths):
        raise TypeError(f"as_cohort takes a Cohort or a config.Paths, not {type(source).__name__}")
    return build_cohort(source, ids)


def cohort_profile(cohort: Cohort, profile: str | Profile | None = None) -> Profile:
    """The profile of a call on ``cohort``: the cohort's own (``Cohort.profile``).

    ``profile`` is needed only for a cohort that carries none (one assembled by hand, as the
    tests and benchmarks do); passed beside a cohort that carries one, it must be the same
    profile.

    Raises
    ------
    ProfileMismatchError
        When ``profile`` differs from the cohort's (names both), or neither is known.
    """
    if profile is None:
        if cohort.profile is None:
            raise ProfileMismatchError(
                "the cohort carries no profile (build it with pipeline.load_study or "
                "pipeline.build_cohort) and none was passed"
            )
        return cohort.profile
    prof = get_profile(profile)
    if cohort.profile is not None and prof != cohort.profile:
        what = "a modified" if prof.name == cohort.profile.name else "the"
        raise ProfileMismatchError(
            f"{what} profile {prof.name!r} passed beside a cohort built for profile "
            f"{cohort.profile.name!r}; leave the profile out, the cohort's is used"
        )
    return prof
