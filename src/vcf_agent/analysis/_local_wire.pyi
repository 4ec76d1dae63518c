"""Types of the local provider's compiled wire format (_local_wire.c)."""

from collections.abc import Iterator, Sequence
from typing import final, overload

from _typeshed import structseq

# An INFO value's list; its items share one type. () for a flag or an empty value.
InfoValues = tuple[str, ...] | tuple[int, ...] | tuple[float, ...]
# (sample, alleles, depth, genotype_quality, allele_depths)
Genotype = tuple[str, tuple[int, ...], int, int, tuple[int, ...]]

@final
class GenotypeCalls(Sequence[Genotype]):
    """A variant's calls as read_variants returns them: a copy of their wire bytes, turned into
    the tuple of calls at its first use as a sequence (compared, hashed and printed as that
    tuple); sample_findings reads the bytes directly."""

    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int, /) -> Genotype: ...
    @overload
    def __getitem__(self, index: slice, /) -> tuple[Genotype, ...]: ...
    def __iter__(self) -> Iterator[Genotype]: ...
    def __hash__(self) -> int: ...

@final
class VariantFields(
    structseq[object],
    tuple[
        str,
        str,
        str,
        str,
        int,
        str,
        str,
        int,
        tuple[str, ...],
        bool,
        float,
        tuple[str, ...],
        dict[str, InfoValues],
        GenotypeCalls | tuple[Genotype, ...],
    ],
):
    @property
    def correlation_id(self) -> str: ...
    @property
    def job_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def chromosome(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def reference(self) -> str: ...
    @property
    def alternate(self) -> str: ...
    @property
    def alt_index(self) -> int: ...
    @property
    def all_alternates(self) -> tuple[str, ...]: ...
    @property
    def has_quality(self) -> bool: ...
    @property
    def quality(self) -> float: ...
    @property
    def filters(self) -> tuple[str, ...]: ...
    @property
    def info(self) -> dict[str, InfoValues]: ...
    @property
    def genotypes(self) -> GenotypeCalls | tuple[Genotype, ...]: ...

def read_variants(batch: bytes, /) -> list[VariantFields] | None: ...
def sample_findings(
    genotypes: Sequence[Genotype], allele: int, failed: bool, record_level: int, /
) -> list[tuple[str, str, float, str]]:
    """(sample, zygosity, allele_balance, call_quality) of each genotype: the values of
    _local_annotator.sample_findings, its pure-Python twin."""

def encoded_findings(genotypes: Sequence[Genotype], allele: int, failed: bool, record_level: int, /) -> bytes:
    """sample_findings' findings encoded as LocalAnnotation `samples` fields, the bytes protobuf
    writes for them: encode_answer takes them as its `samples`."""

def encode_answer(
    correlation_id: str,
    job_id: str,
    tenant_id: str,
    fixed: bytes,
    classification: str,
    confidence: float,
    criteria: Sequence[str],
    rationale: str,
    variant_class: str,
    substitution: str,
    multi_allelic: bool,
    allele_count: int,
    quality_tier: str,
    frequency_tier: str,
    population_af: float,
    consequence: str,
    impact: str,
    gene: str,
    hgvs_c: str,
    hgvs_p: str,
    clinvar_significance: str,
    overlapping_genes: Sequence[str],
    priority_tier: str,
    priority_reasons: Sequence[str],
    samples: Sequence[tuple[str, str, float, str]] | bytes,
    sv_type: str,
    acmg_criteria: Sequence[tuple[str, str, bool, str, str, str]],
    population_af_source: str,
    clinvar_review_status: str,
    clinvar_conflicts: str,
    clinvar_source: str,
    transcript: str,
    biotype: str,
    transcript_choice: str,
    /,
) -> bytes:
    """A serialized AnalysisResult: the arguments are its fields in field-number order, `fixed` the
    encoded fields 4 to 6 and the rest from `variant_class` on its LocalAnnotation's, samples as
    (sample, zygosity, allele_balance, call_quality) or encoded_findings' bytes, criteria as
    (code, strength, met, value, source, rule)."""

def variant_batch_parts(variant_batch: bytes, /) -> tuple[bytes | None, int, bytes]:
    """(the first variant's bytes or None, how many variants, every other field as it came) of a
    serialized VariantBatch. Raises ValueError on framing upb would reject."""

def splice_results(variant_batch: bytes, answers: Sequence[bytes], /) -> bytes:
    """The serialized AnalysisResultBatch of the answers, each with its variant's bytes from the
    serialized VariantBatch, but INFO (schema.carried_variant), spliced in first. Raises ValueError
    on framing upb would reject or another count of answers."""

def split_results(batch: bytes, /) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """The results of a batch written variant first (schema.variant_first_result), each as (variant
    field with its length prefix, answer), and the answers alone as a serialized
    AnalysisResultBatch; None for any other batch. Raises ValueError on framing upb would reject."""
