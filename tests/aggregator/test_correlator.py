"""The aggregator's spliced single-provider write equals the one build_write assembles."""

from __future__ import annotations

import pytest

from vcf_agent.analysis import build_write
from vcf_agent.schema import GenotypeCall, genotype_columns, split_variant_first, varint
from vcf_agent.services.aggregator._correlator import _single_write
from vcf_agent.v1 import analysis_pb2, events_pb2

_OK = analysis_pb2.AnalysisResult.STATUS_OK
_FAILED = analysis_pb2.AnalysisResult.STATUS_FAILED


def _result(status: int, classification: str, tier: str) -> analysis_pb2.AnalysisResult:
    result = analysis_pb2.AnalysisResult(
        correlation_id="c1",
        job_id="job-1",
        tenant_id="tenant-1",
        provider="local",
        status=status,  # type: ignore[arg-type]
        classification=classification,
        confidence=0.4,
        rationale="because",
    )
    result.annotation.priority_tier = tier
    result.variant.correlation_id = "c1"
    result.variant.chromosome = "chr1"
    result.variant.position = 123
    result.variant.genotypes.CopyFrom(genotype_columns([GenotypeCall("S1", (0, 1))]))
    return result


@pytest.mark.parametrize(
    ("status", "classification", "tier"),
    [
        (_OK, "likely_benign", "P4"),
        (_OK, "", "P3"),
        (_OK, "not-in-the-vocabulary", ""),
        (_FAILED, "pathogenic", "P1"),
    ],
)
def test_single_write_matches_build_write(status: int, classification: str, tier: str) -> None:
    spliced = _result(status, classification, tier)
    merged, payload = _single_write("c1", spliced.job_id, spliced.tenant_id, spliced, None)
    expected = build_write("c1", [_result(status, classification, tier)], frozenset({"local"}), partial=False)

    assert events_pb2.DatabaseWrite.FromString(payload) == expected
    assert merged == expected.classification
    assert not spliced.HasField("variant")

    # As the router's local worker sends it: the variant first, then the rest of the answer.
    arrived = _result(status, classification, tier)
    variant = arrived.variant.SerializeToString()
    rest = _result(status, classification, tier)
    rest.ClearField("variant")
    serialized = b"\x82\x01" + varint(len(variant)) + variant + rest.SerializeToString()
    assert analysis_pb2.AnalysisResult.FromString(serialized) == arrived
    merged, payload = _single_write(
        "c1", arrived.job_id, arrived.tenant_id, arrived, split_variant_first(serialized)
    )
    assert events_pb2.DatabaseWrite.FromString(payload) == expected
    assert merged == expected.classification
