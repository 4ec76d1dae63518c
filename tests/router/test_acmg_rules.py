"""ACMG/AMP 2015 combining rules (Richards et al. 2015, Table 5) and the frequency criteria's
thresholds (Table 3 PM2, Table 4 BA1/BS1; ClinGen SVI BA1 2018 and PM2 v1.0), rule by rule."""

from __future__ import annotations

import pytest

from vcf_agent.analysis._acmg import (
    MODERATE,
    STAND_ALONE,
    STRONG,
    SUPPORTING,
    VERY_STRONG,
    Criterion,
    combine,
    frequency_criteria,
)
from vcf_agent.analysis._local_annotator import clinvar_class


def met(*codes: tuple[str, str]) -> list[Criterion]:
    return [Criterion(code, strength, True, "", "", "") for code, strength in codes]


PVS1 = ("PVS1", VERY_STRONG)
PS = ("PS1", STRONG)
PM = ("PM1", MODERATE)
PP = ("PP1", SUPPORTING)
PM2_SUPPORTING = ("PM2_Supporting", SUPPORTING)
BA1 = ("BA1", STAND_ALONE)
BS = ("BS1", STRONG)
BP = ("BP1", SUPPORTING)


@pytest.mark.parametrize(
    ("codes", "verdict"),
    [
        # Pathogenic (i) a-d, (ii), (iii) a-c.
        ((PVS1, PS), "pathogenic"),
        ((PVS1, PM, PM), "pathogenic"),
        ((PVS1, PM, PP), "pathogenic"),
        ((PVS1, PP, PP), "pathogenic"),
        ((PS, PS), "pathogenic"),
        ((PS, PM, PM, PM), "pathogenic"),
        ((PS, PM, PM, PP, PP), "pathogenic"),
        ((PS, PM, PP, PP, PP, PP), "pathogenic"),
        # Likely pathogenic (i)-(vi).
        ((PVS1, PM), "likely_pathogenic"),
        ((PS, PM), "likely_pathogenic"),
        ((PS, PM, PM), "likely_pathogenic"),
        ((PS, PP, PP), "likely_pathogenic"),
        ((PM, PM, PM), "likely_pathogenic"),
        ((PM, PM, PP, PP), "likely_pathogenic"),
        ((PM, PP, PP, PP, PP), "likely_pathogenic"),
        # ClinGen SVI PM2 v1.0: PVS1 + PM2_Supporting is likely pathogenic.
        ((PVS1, PM2_SUPPORTING), "likely_pathogenic"),
        # Below every pathogenic rule.
        ((PVS1,), "uncertain_significance"),
        ((PS, PP), "uncertain_significance"),
        ((PM, PM), "uncertain_significance"),
        ((PM2_SUPPORTING,), "uncertain_significance"),
        # Benign (i) BA1, (ii) two strong; likely benign (i) strong + supporting, (ii) two supporting.
        ((BA1,), "benign"),
        ((BS, BS), "benign"),
        ((BS, BP), "likely_benign"),
        ((BP, BP), "likely_benign"),
        # BS1 alone is not likely benign.
        ((BS,), "uncertain_significance"),
        # Contradictory benign and pathogenic criteria.
        ((BS, BS, PS, PS), "uncertain_significance"),
        ((), "uncertain_significance"),
    ],
)
def test_richards_2015_table5_combining_rules(codes: tuple[tuple[str, str], ...], verdict: str) -> None:
    assert combine(met(*codes)) == verdict


def test_criteria_assessed_but_not_met_do_not_count() -> None:
    unmet = [Criterion("PVS1", VERY_STRONG, False, "", "", ""), *met(PM)]
    assert combine(unmet) == "uncertain_significance"


@pytest.mark.parametrize(
    ("af", "codes"),
    [
        (0.0501, ["BA1"]),
        # BA1 is strictly greater than 5% (Richards 2015 Table 4; ClinGen SVI 2018).
        (0.05, ["BS1"]),
        (0.0101, ["BS1"]),
        (0.01, []),
        (0.0001, []),
        (0.0, ["PM2_Supporting"]),
        (-1.0, ["PM2_Supporting"]),
    ],
)
def test_ba1_bs1_pm2_supporting_thresholds(af: float, codes: list[str]) -> None:
    found = frequency_criteria(af, "CSQ:MAX_AF", bs1_af=0.01, pm2_af=0.0)
    assert [c.code for c in found] == codes
    assert all(c.met and c.source == "CSQ:MAX_AF" for c in found)


def test_pm2_threshold_is_configurable_for_recessive_disorders() -> None:
    (pm2,) = frequency_criteria(0.00005, "INFO:gnomAD_AF", bs1_af=0.01, pm2_af=0.0001)
    assert (pm2.code, pm2.strength, pm2.value) == ("PM2_Supporting", "supporting", "5e-05")


@pytest.mark.parametrize(
    ("significance", "review_status", "kind"),
    [
        # ClinVar's VCF since 2017 (README_VCF: CLNSIG, CLNREVSTAT).
        ("Pathogenic", "criteria_provided,_multiple_submitters,_no_conflicts", "pathogenic"),
        ("Pathogenic/Likely_pathogenic", "criteria_provided,_single_submitter", "likely_pathogenic"),
        (
            "Conflicting_interpretations_of_pathogenicity",
            "criteria_provided,_conflicting_interpretations",
            "conflicting",
        ),
        ("Uncertain_significance", "criteria_provided,_conflicting_classifications", "conflicting"),
        ("Benign", "reviewed_by_expert_panel", "benign"),
        # Before 2017: numeric codes, '|' between per-condition records, review "conf" for conflicts.
        ("5", "no_criteria", "pathogenic"),
        ("5|2", "no_criteria|mult", "conflicting"),
        ("255", "conf", "conflicting"),
        ("255", "single", ""),
        ("0,0", "single,single", "uncertain_significance"),
    ],
)
def test_clinvar_assertion_and_conflicts_from_significance_and_review_status(
    significance: str, review_status: str, kind: str
) -> None:
    assert clinvar_class(significance, review_status) == kind
