"""Tests of crlm_lib.provenance: the version, commit and run identity the outputs carry."""

from __future__ import annotations

import crlm_lib
from crlm_lib import provenance


def test_software_record_names_version_and_commit():
    rec = provenance.software_record()
    assert rec["package"] == "crlm_lib" and rec["version"] == crlm_lib.__version__
    commit = str(rec["git_commit"])
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)
    text = provenance.software_text(rec)
    assert text.startswith(f"crlm_lib {crlm_lib.__version__} (git ") and len(text) <= 64
    old = {"package": "crlm_lib", "version": "0.0.9", "git_commit": "a" * 40, "git_dirty": True}
    assert provenance.software_text(old) == "crlm_lib 0.0.9 (git aaaaaaaaaaaa, uncommitted changes)"


def test_identities_of_one_run_and_of_an_ensemble():
    runs = [
        {"identity": {"cohort": "c1", "split": "s1", "config": "k1"}},
        {"identity": {"cohort": "c1", "split": "s2", "config": "k1"}},
    ]
    assert provenance.run_identity_text(runs[0]) == "cohort c1 / split s1 / config k1"
    assert (
        provenance.ensemble_identity_text(runs) == "cohort c1 / split per run: s1, s2 / config k1"
    )
    assert provenance.run_identity_text({}) == "not recorded"
    assert provenance.ensemble_identity_text([runs[0], {}]) == "not recorded"
