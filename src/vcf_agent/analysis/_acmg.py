"""ACMG/AMP 2015 criteria the local annotator can assess offline, and the guideline's combining rules.

Sources:
- Richards S et al. Standards and guidelines for the interpretation of sequence variants.
  Genet Med 2015;17:405-424 (the "ACMG/AMP 2015" guideline): Table 3 (pathogenic criteria),
  Table 4 (benign criteria), Table 5 (rules for combining criteria).
- ClinGen Sequence Variant Interpretation (SVI) WG, Ghosh R et al. Updated recommendation for
  the benign stand-alone ACMG/AMP criterion. Hum Mutat 2018;39:1525-1530 (BA1: allele frequency
  > 0.05 in any general continental population dataset).
- ClinGen SVI Recommendation for Absence/Rarity (PM2) v1.0 (2020): PM2 applies at Supporting
  strength only ("PM2_Supporting"); the SVI also accepts PVS1 + PM2_Supporting as likely
  pathogenic.
- ClinGen SVI, Biesecker LG & Harrison SM. The ACMG/AMP reputable source criteria for the
  interpretation of sequence variants. Genet Med 2018;20:1687-1688: PP5 and BP6 (a reputable
  source's assertion) are retired, so a ClinVar assertion is reported and prioritised but is not
  ACMG evidence here.

What can be assessed from a VCF alone: population frequency (BA1, BS1, PM2_Supporting) from
population databases the file was annotated with, and whether a predicted null variant sits in
a protein-coding transcript (PVS1). PVS1 also needs loss of function to be a known disease
mechanism for the gene, which no VCF says, so it is reported as assessed but not met.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

# Strengths, as the guideline's tables name them.
STAND_ALONE = "stand_alone"
VERY_STRONG = "very_strong"
STRONG = "strong"
MODERATE = "moderate"
SUPPORTING = "supporting"

BA1_AF = 0.05
PATHOGENIC = "pathogenic"
LIKELY_PATHOGENIC = "likely_pathogenic"
UNCERTAIN = "uncertain_significance"
LIKELY_BENIGN = "likely_benign"
BENIGN = "benign"
NOT_CLASSIFIED = "not_classified"


class Criterion(NamedTuple):
    """One assessed criterion: code, strength, whether it is met, the value and its source field."""

    code: str
    strength: str
    met: bool
    value: str
    source: str
    rule: str


def frequency_criteria(
    af: float, source: str, bs1_af: float, pm2_af: float, unreadable: str = ""
) -> list[Criterion]:
    """BA1, BS1 or PM2_Supporting from the highest population AF found (-1: absent from every
    population source the file was annotated with). Call only when population data was assessed.

    `unreadable` names a population source whose value for the allele could not be read: it may
    hold a higher frequency, so what was read bounds the frequency from below only. That is enough
    for BA1 and BS1, never for absence or rarity: PM2_Supporting is then assessed, not met."""
    value = "absent" if af < 0 else f"{af:.4g}"
    if af > BA1_AF:
        return [
            Criterion(
                "BA1",
                STAND_ALONE,
                True,
                value,
                source,
                "ACMG/AMP 2015 Table 4 BA1, ClinGen SVI 2018: allele frequency > 0.05 in a population"
                " database",
            )
        ]
    if af > bs1_af:
        return [
            Criterion(
                "BS1",
                STRONG,
                True,
                value,
                source,
                f"ACMG/AMP 2015 Table 4 BS1: allele frequency > {bs1_af:g}, greater than expected for the"
                " disorder (threshold configured: VCF_AGENT_ACMG_BS1_AF)",
            )
        ]
    if af <= pm2_af:
        rule = "ACMG/AMP 2015 Table 3 PM2 at Supporting strength (ClinGen SVI PM2 v1.0): absent from"
        rule += " population databases" + (f" or AF <= {pm2_af:g}" if pm2_af > 0 else "")
        if unreadable:
            rule += f"; not applied: {unreadable} could not be read for this allele"
            return [
                Criterion(
                    "PM2_Supporting", SUPPORTING, False, f"{value}; {unreadable} unreadable", source, rule
                )
            ]
        return [Criterion("PM2_Supporting", SUPPORTING, True, value, source, rule)]
    return []


def null_variant_criterion(consequence: str, biotype: str, source: str) -> Criterion:
    """PVS1 for a predicted null variant in a protein-coding transcript: assessed, not met offline."""
    return Criterion(
        "PVS1",
        VERY_STRONG,
        False,
        consequence + (f" in {biotype}" if biotype else ""),
        source,
        "ACMG/AMP 2015 Table 3 PVS1: null variant in a gene where loss of function is a known"
        " mechanism of disease; the gene's mechanism is not known offline, so not applied",
    )


def combine(criteria: Iterable[Criterion]) -> str:
    """The verdict of the met criteria by ACMG/AMP 2015 Table 5 (plus ClinGen SVI's PVS1 +
    PM2_Supporting); uncertain_significance when no rule is satisfied or benign and pathogenic
    rules are both satisfied (Table 5: "the criteria for benign and pathogenic are contradictory")."""
    return _verdict(tuple([(c.code, c.strength) for c in criteria if c.met]))


@lru_cache(maxsize=256)
def _verdict(met: tuple[tuple[str, str], ...]) -> str:
    """combine() of the met criteria as (code, strength) pairs. It runs for every variant and a
    handful of combinations recur, so each is counted once (counting cost several
    microseconds a variant)."""
    pathogenic: Counter[str] = Counter()
    benign: Counter[str] = Counter()
    for code, strength in met:
        # Benign criteria are the B codes (BA1, BS1...), pathogenic ones the P codes.
        (benign if code.startswith("B") else pathogenic)[strength] += 1
    path = _pathogenic_verdict(pathogenic)
    ben = _benign_verdict(benign)
    if path and ben:
        return UNCERTAIN
    return path or ben or UNCERTAIN


def _pathogenic_verdict(count: Counter[str]) -> str:
    pvs, ps, pm, pp = count[VERY_STRONG], count[STRONG], count[MODERATE], count[SUPPORTING]
    # Table 5, Pathogenic (i)-(iii).
    if pvs >= 1 and (ps >= 1 or pm >= 2 or (pm == 1 and pp >= 1) or pp >= 2):
        return PATHOGENIC
    if ps >= 2:
        return PATHOGENIC
    if ps == 1 and (pm >= 3 or (pm == 2 and pp >= 2) or (pm == 1 and pp >= 4)):
        return PATHOGENIC
    # Table 5, Likely pathogenic (i)-(vi); ClinGen SVI PM2 v1.0: PVS1 + PM2_Supporting.
    if pvs >= 1 and (pm == 1 or pp >= 1):
        return LIKELY_PATHOGENIC
    if ps == 1 and (pm >= 1 or pp >= 2):
        return LIKELY_PATHOGENIC
    if pm >= 3 or (pm == 2 and pp >= 2) or (pm == 1 and pp >= 4):
        return LIKELY_PATHOGENIC
    return ""


def _benign_verdict(count: Counter[str]) -> str:
    ba, bs, bp = count[STAND_ALONE], count[STRONG], count[SUPPORTING]
    # Table 5, Benign (i) BA1, (ii) >= 2 strong; Likely benign (i) 1 strong + 1 supporting,
    # (ii) >= 2 supporting. BS1 alone is none of these.
    if ba >= 1 or bs >= 2:
        return BENIGN
    if (bs == 1 and bp >= 1) or bp >= 2:
        return LIKELY_BENIGN
    return ""
