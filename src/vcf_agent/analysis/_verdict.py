"""One variant's stored verdict from its providers' answers.

Shared by the aggregator (streaming) and ingest's in-process batch path, so both store the same
verdict for the same answers.
"""

from __future__ import annotations

from vcf_agent.schema import CLASSIFICATIONS
from vcf_agent.v1 import analysis_pb2, events_pb2

_STATUS_OK = analysis_pb2.AnalysisResult.STATUS_OK


def merge_verdict(results: list[analysis_pb2.AnalysisResult]) -> tuple[str, str]:
    """(classification, priority tier): the most severe answer among successful providers."""
    ok = [r for r in results if r.status == _STATUS_OK and r.classification]
    # No provider answered: nothing was assessed.
    classification = "not_classified"
    if ok:
        ranked = sorted(
            ok,
            key=lambda r: (
                CLASSIFICATIONS.index(r.classification) if r.classification in CLASSIFICATIONS else 2
            ),
        )
        classification = ranked[0].classification
    tier = next((r.annotation.priority_tier for r in results if r.annotation.priority_tier), "")
    return classification, tier


def build_write(
    cid: str, results: list[analysis_pb2.AnalysisResult], requested: frozenset[str], *, partial: bool
) -> events_pb2.DatabaseWrite:
    """The stored form of one variant's answers (results ordered by provider); empties their variants."""
    first = results[0]
    classification, tier = merge_verdict(results)
    write = events_pb2.DatabaseWrite(
        correlation_id=cid,
        job_id=first.job_id,
        tenant_id=first.tenant_id,
        classification=classification,
        priority_tier=tier,
        partial=partial,
        missing_providers=sorted(requested - {r.provider for r in results}),
    )
    write.variant.CopyFrom(first.variant)
    for result in results:
        # Drop the embedded variant before copying: the write carries it once.
        result.ClearField("variant")
    write.results.extend(results)
    return write
