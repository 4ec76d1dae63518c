"""A job's AnnotationContext: what its VCF header says about annotations, built once per job.

The router reads every batch with the context of the job it belongs to, so each file is read
by its own header (batches of one job may reach different router instances; the context rides
on every batch, see VariantBatch.annotation_context).

Population allele frequencies must come from population databases, never from the file's
own cohort (ACMG/AMP 2015, Richards et al., BA1/BS1/PM2; ClinGen SVI BA1 refinement: "allele
frequency > 5% in any general continental population dataset of at least 2,000 observed
alleles"). An INFO key counts as one when its name or Description names a population source
(gnomAD, ExAC, ESP, 1000 Genomes, TOPMed, ...; the name pattern is configurable) and it holds a
frequency (an AF/MAF token in the name or "frequenc" in the Description). The file's own
AF/AC/AN/MLEAF never do, whatever their Description says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from vcf_agent.v1 import variant_pb2

from ._vcf_header import parse_structured

# Population databases as annotators name them in INFO keys and Descriptions (vcfanno,
# SnpSift dbNSFP, ClinVar's AF_ESP/AF_EXAC/AF_TGP, gnomAD's popmax/grpmax, dbSNP's TOPMED).
# gnomAD, ExAC and 1000G prefix keys without a separator too (MIP's GNOMADAF, EXACAF, EXACMAX_AF),
# as does SweGen, the Swedish population's 1,000 genomes (MIP's SWEGENAF).
DEFAULT_POPULATION_PATTERN = (
    r"(?<![a-z0-9])(gnomad[a-z0-9]*|exac[a-z0-9]*|swegen[a-z0-9]*|esp[0-9]*|go-esp"
    r"|exome sequencing project|1000g[a-z0-9]*|1000 ?genomes|1kg|tgp|topmed|popmax|grpmax|dbnsfp)(?![a-z0-9])"
)
# The file's own cohort statistics: never population evidence.
OWN_COHORT_KEYS = frozenset({"AF", "AC", "AN", "MLEAF", "MLEAC", "NS", "DP"})
_FREQUENCY_TOKENS = frozenset({"af", "aaf", "maf", "caf", "freq", "frequency"})
_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")
_FREQUENCY_TEXT = re.compile(r"frequenc", re.IGNORECASE)
_FREQUENCY_TYPES = frozenset({"Float", "String"})
CLINVAR_KEYS = ("CLNSIG", "CLNREVSTAT", "CLNSIGCONF")
_ANNOTATION_TAGS = ("CSQ", "ANN", "BCSQ")
# VEP: "... Format: Allele|Consequence|..."; SnpEff: "...: 'Allele | Annotation | ...'".
_ANNOTATION_FORMAT = re.compile(r"([^:'\"]*\|[^'\"]*)")


def is_population_frequency(key: str, type_: str, description: str, pattern: re.Pattern[str]) -> bool:
    """Whether an INFO definition holds a population database's allele frequency."""
    if key.upper() in OWN_COHORT_KEYS or type_ not in _FREQUENCY_TYPES:
        return False
    if not (pattern.search(key) or pattern.search(description)):
        return False
    tokens = set(_TOKEN_SPLIT.split(key.lower()))
    return bool(tokens & _FREQUENCY_TOKENS) or bool(_FREQUENCY_TEXT.search(description))


def annotation_context(
    header_lines: Iterable[str], population_pattern: str = DEFAULT_POPULATION_PATTERN
) -> variant_pb2.AnnotationContext:
    """The context of one VCF header (its `##INFO` lines; other lines are ignored)."""
    pattern = re.compile(population_pattern, re.IGNORECASE)
    context = variant_pb2.AnnotationContext()
    for line in header_lines:
        if not line.startswith("##INFO=<"):
            continue
        attrs = parse_structured(line[len("##INFO=") :])
        if attrs is None or "ID" not in attrs:
            continue
        key = attrs["ID"]
        description = attrs.get("Description", "")
        if key in _ANNOTATION_TAGS:
            match = _ANNOTATION_FORMAT.search(description)
            names = [name.strip() for name in match.group(1).split("|")] if match else []
            getattr(context, f"{key.lower()}_fields").extend(names)
        elif key in CLINVAR_KEYS:
            context.clinvar_keys.append(key)
        elif is_population_frequency(key, attrs.get("Type", ""), description, pattern):
            context.population_keys.append(key)
    return context
