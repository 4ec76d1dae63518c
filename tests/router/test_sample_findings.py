"""Per-sample findings: the compiled _local_wire.sample_findings gives the values of its
pure-Python twin, _local_annotator.sample_findings, for every shape of call, whether the calls
come as tuples or as the reader's GenotypeCalls (read from the wire columns directly); and
_local_wire.encoded_findings, what the annotator uses when compiled, writes the bytes protobuf
serializes for the twin's values."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from vcf_agent.analysis._local_annotator import sample_findings
from vcf_agent.analysis._variant_fields import read_variants
from vcf_agent.compiled import compiled_module
from vcf_agent.schema import GenotypeCall, genotype_columns
from vcf_agent.v1 import analysis_pb2, variant_pb2

_LOCAL_WIRE = compiled_module("vcf_agent.analysis._local_wire")
pytestmark = pytest.mark.skipif(
    _LOCAL_WIRE is None, reason="the compiled local wire format is not built or VCF_AGENT_NO_EXTENSIONS=1"
)

Genotype = tuple[str, tuple[int, ...], int, int, tuple[int, ...]]


def _exact(findings: list[tuple[str, str, float, str]]) -> list[tuple[Any, ...]]:
    """The findings with each balance as its bits, so -0.0 and 0.0 differ."""
    return [(sample, zyg, struct.pack("<d", balance), quality) for sample, zyg, balance, quality in findings]


def _compiled(
    genotypes: list[Genotype], allele: int, failed: bool, level: int
) -> list[tuple[str, str, float, str]]:
    assert _LOCAL_WIRE is not None
    found: list[tuple[str, str, float, str]] = _LOCAL_WIRE.sample_findings(genotypes, allele, failed, level)
    return found


def _random_call(rng: random.Random, index: int) -> Genotype:
    ploidy = rng.choice((0, 1, 2, 2, 2, 3, 4, 9))
    alleles = tuple(rng.choice((-2, -1, -1, 0, 0, 1, 1, 2, 3)) for _ in range(ploidy))
    depths = tuple(
        rng.choice((-1, 0, 0, 1, 5, 17, 40, 2**31 - 1)) for _ in range(rng.choice((0, 1, 2, 3, 4, 10)))
    )
    return (
        f"S{index}",
        alleles,
        rng.choice((-1, 0, 9, 10, 19, 20, 500)),
        rng.choice((-1, 0, 14, 15, 29, 30, 99)),
        depths,
    )


@pytest.mark.parametrize("seed", range(30))
def test_random_calls_give_the_twins_values(seed: int) -> None:
    rng = random.Random(seed)
    genotypes = [_random_call(rng, i) for i in range(rng.randrange(1, 300))]
    for allele in (0, 1, 2, 3):
        for failed in (False, True):
            for level in range(5):
                want = sample_findings(genotypes, allele, failed, level)
                assert _exact(_compiled(genotypes, allele, failed, level)) == _exact(want)


EDGES: dict[str, Genotype] = {
    "no call": ("a", (-1, -1), 30, 40, (10, 10)),
    "half call of the allele": ("b", (-1, 1), 30, 40, (0, 3)),
    "half call of another": ("c", (2, -1), 30, 40, (0, 3, 4)),
    "hom ref": ("d", (0, 0), 5, 5, (7,)),
    "het alt": ("e", (1, 2), 25, 16, (0, 5, 5)),
    "other alt": ("f", (2, 2), 25, 16, (0, 5, 5)),
    "haploid": ("g", (1,), -1, -1, (0, 9)),
    "haploid ref": ("h", (0,), 10, 15, ()),
    "no alleles": ("i", (), 10, 15, (1, 1)),
    "triploid het": ("j", (0, 0, 1), 10, 15, (4, 2)),
    "triploid het alt": ("k", (0, 1, 2), 10, 15, (4, 2, 2)),
    "triploid hom alt": ("l", (1, 1, 1), 10, 15, (0, 2)),
    "triploid with a missing allele": ("m", (1, -1, 0), 10, 15, (4, 2)),
    "triploid other alt": ("n", (0, 2, 2), 10, 15, (4, 2, 1)),
    "-2 in a diploid call": ("o", (-2, 1), 10, 15, (4, 2)),
    "-2 in a triploid call": ("p", (-2, 1, 1), 10, 15, (4, 2)),
    "missing depths": ("q", (0, 1), 10, 15, (-1, 3)),
    "no reads": ("r", (0, 1), 10, 15, (0, 0)),
    "negative allele depth": ("s", (0, 1), 10, 15, (3, -1)),
    "AD without the allele": ("t", (0, 1), 10, 15, (3,)),
    "long AD and ploidy (heap buffers)": ("u", (0,) * 11 + (1,), 10, 15, tuple(range(12))),
    "unicode sample": ("ü-1", (0, 1), 10, 15, (1, 2)),
}


@pytest.mark.parametrize("call", EDGES.values(), ids=EDGES.keys())
def test_edge_calls_give_the_twins_values(call: Genotype) -> None:
    for allele in (0, 1, 2):
        for failed in (False, True):
            for level in range(5):
                want = sample_findings([call], allele, failed, level)
                assert _exact(_compiled([call], allele, failed, level)) == _exact(want)


def test_a_negative_allele_indexes_as_python_does() -> None:
    # alt_index -2 on the wire: Python counts from the end of AD, or raises IndexError past its start.
    call: Genotype = ("a", (0, 1), 10, 15, (2, 6))
    assert _exact(_compiled([call], -1, False, 3)) == _exact(sample_findings([call], -1, False, 3))
    for findings in (sample_findings, _compiled):
        with pytest.raises(IndexError):
            findings([call], -3, False, 3)


@pytest.mark.parametrize(
    "genotypes",
    [
        [("a", (0, 1), 1, 1)],
        [("a", [0, 1], 1, 1, ())],
        [("a", (0, "1"), 1, 1, ())],
        [("a", (0, 1), None, 1, ())],
    ],
)
def test_what_is_not_a_genotype_is_refused(genotypes: list[Any]) -> None:
    with pytest.raises(TypeError):
        _compiled(genotypes, 1, False, 3)


def _read_from_the_wire(genotypes: list[Genotype]) -> Any:
    """The calls as the compiled reader returns them from a serialized batch: GenotypeCalls."""
    calls = genotype_columns(
        GenotypeCall(sample, alleles, depth=depth, genotype_quality=quality, allele_depths=depths)
        for sample, alleles, depth, quality, depths in genotypes
    )
    variant = variant_pb2.VariantMessage(correlation_id="c", genotypes=calls)
    batch = variant_pb2.VariantBatch(variants=[variant])
    (fields,) = read_variants(batch.SerializeToString()) or ()
    assert _LOCAL_WIRE is not None and isinstance(fields.genotypes, _LOCAL_WIRE.GenotypeCalls)
    return fields.genotypes


def _protobuf_encoding(findings: list[tuple[str, str, float, str]]) -> bytes:
    """The LocalAnnotation `samples` fields of the findings, serialized by protobuf."""
    annotation = analysis_pb2.LocalAnnotation()
    for sample, zyg, balance, quality in findings:
        annotation.samples.add(sample=sample, zygosity=zyg, allele_balance=balance, call_quality=quality)
    return annotation.SerializeToString()


@pytest.mark.parametrize("seed", range(30))
def test_calls_read_from_the_wire_give_the_twins_findings_and_protobufs_bytes_for_them(seed: int) -> None:
    assert _LOCAL_WIRE is not None
    rng = random.Random(seed)
    genotypes = [_random_call(rng, i) for i in range(rng.randrange(1, 300))]
    calls = _read_from_the_wire(genotypes)
    for allele in (-1, 0, 1, 2, 3):
        for failed in (False, True):
            for level in range(5):
                want = sample_findings(genotypes, allele, failed, level)
                assert _exact(_compiled(calls, allele, failed, level)) == _exact(want)
                # encoded_findings, what the annotator uses when compiled, from the wire and from tuples.
                encoded = _protobuf_encoding(want)
                assert _LOCAL_WIRE.encoded_findings(calls, allele, failed, level) == encoded
                assert _LOCAL_WIRE.encoded_findings(genotypes, allele, failed, level) == encoded
    # Reading the findings left the calls unread as Python values; they still read as the tuples.
    assert tuple(calls) == tuple(genotypes)


def test_edge_calls_read_from_the_wire_give_the_twins_findings() -> None:
    genotypes = list(EDGES.values())
    calls = _read_from_the_wire(genotypes)
    for allele in (0, 1, 2):
        for failed in (False, True):
            for level in range(5):
                want = sample_findings(genotypes, allele, failed, level)
                assert _exact(_compiled(calls, allele, failed, level)) == _exact(want)
    for findings in (sample_findings, _compiled):
        with pytest.raises(IndexError):
            findings(calls if findings is _compiled else genotypes, -3, False, 3)


def test_encoded_edge_findings_are_protobufs_bytes_for_the_twins_values() -> None:
    assert _LOCAL_WIRE is not None
    # Empty names, -0.0 and +0.0 balances (protobuf leaves +0.0 out), every zygosity and tier.
    genotypes = [*EDGES.values(), ("", (0, 1), 30, 40, (5, 0)), ("z", (0, 1), 30, 40, (0, 0))]
    calls = _read_from_the_wire(genotypes)
    for allele in (0, 1, 2):
        for failed in (False, True):
            for level in range(5):
                want = _protobuf_encoding(sample_findings(genotypes, allele, failed, level))
                assert _LOCAL_WIRE.encoded_findings(calls, allele, failed, level) == want
    with pytest.raises(IndexError):
        _LOCAL_WIRE.encoded_findings(calls, -3, False, 3)
    with pytest.raises(ValueError, match="record_level"):
        _LOCAL_WIRE.encoded_findings(calls, 1, False, 5)
