"""Types of the compiled variant reader (_variant_reader.c)."""

from typing import final

from _typeshed import structseq

# An INFO value's list; its items share one type. () for a flag or an empty value.
InfoValues = tuple[str, ...] | tuple[int, ...] | tuple[float, ...]
# (sample, alleles, depth, genotype_quality, allele_depths)
Genotype = tuple[str, tuple[int, ...], int, int, tuple[int, ...]]

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
        tuple[Genotype, ...],
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
    def genotypes(self) -> tuple[Genotype, ...]: ...

def read_variants(batch: bytes, /) -> list[VariantFields] | None: ...
