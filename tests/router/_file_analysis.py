"""Runs a VCF file through ingest's reader and the local provider, as a job does: every batch
carries the annotation context ingest builds from the file's own header."""

from __future__ import annotations

import asyncio
from pathlib import Path

from vcf_agent.services.ingest._annotation_context import DEFAULT_POPULATION_PATTERN, annotation_context
from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.services.router import LocalProvider
from vcf_agent.v1 import analysis_pb2


def analyse_file(
    path: Path,
    *,
    batch_size: int = 2000,
    population_pattern: str = DEFAULT_POPULATION_PATTERN,
    provider: LocalProvider | None = None,
) -> list[analysis_pb2.AnalysisResult]:
    """The local provider's answers for every variant of `path`, each with its variant attached."""
    provider = provider or LocalProvider()
    results: list[analysis_pb2.AnalysisResult] = []
    with VcfReader(
        path, file_id="f", job_id="j", tenant_id="t", source_name=path.name, batch_size=batch_size
    ) as reader:
        context = annotation_context(reader.header_lines, population_pattern)
        for batch in reader:
            batch.annotation_context.CopyFrom(context)
            requests = analysis_pb2.AnalysisRequestBatch(provider="local", requested_providers=["local"])
            requests.variant_batch.CopyFrom(batch)
            results.extend(asyncio.run(provider.analyse_batch(requests)).results)
    return results


def at(
    results: list[analysis_pb2.AnalysisResult], position: int, alternate: str
) -> analysis_pb2.AnalysisResult:
    """The one answer for the ALT `alternate` of the record at `position`."""
    (found,) = [r for r in results if r.variant.position == position and r.variant.alternate == alternate]
    return found
