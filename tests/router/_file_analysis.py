"""Runs a VCF file through ingest's reader and the local provider, as a job does: every batch
carries the annotation context ingest builds from the file's own header."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pysam

from vcf_agent.analysis import LocalProvider
from vcf_agent.schema import GenotypeCall, genotype_columns
from vcf_agent.services.ingest._annotation_context import DEFAULT_POPULATION_PATTERN, annotation_context
from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.v1 import analysis_pb2, variant_pb2


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


def info_value(value: Any) -> variant_pb2.InfoValue:
    """Typed INFO value from a Python value (as pysam returns it, or a test literal)."""
    if value is True:
        return variant_pb2.InfoValue(flag=True)
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    if all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return variant_pb2.InfoValue(ints=variant_pb2.IntList(values=items))
    if all(isinstance(item, (int, float)) or item is None for item in items):
        floats = [math.nan if item is None else float(item) for item in items]
        return variant_pb2.InfoValue(floats=variant_pb2.FloatList(values=floats))
    return variant_pb2.InfoValue(strings=variant_pb2.StringList(values=[str(item) for item in items]))


def messages_from_vcf(path: Path) -> list[variant_pb2.VariantMessage]:
    """One message per ALT allele, shaped as ingest publishes them."""
    messages = []
    with pysam.VariantFile(str(path)) as source:
        for index, record in enumerate(source):
            alts = [str(alt) for alt in record.alts or ()]
            genotypes = []
            for name, sample in record.samples.items():
                name = str(name)
                keys = set(sample.keys())
                gt = sample.get("GT") or ()
                ad = sample.get("AD") if "AD" in keys else None
                genotypes.append(
                    GenotypeCall(
                        name,
                        tuple(-1 if allele is None else allele for allele in gt),
                        phased=sample.phased,
                        depth=sample.get("DP") if "DP" in keys and sample.get("DP") is not None else -1,
                        genotype_quality=round(sample.get("GQ"))
                        if "GQ" in keys and sample.get("GQ") is not None
                        else -1,
                        allele_depths=tuple(ad) if ad and None not in ad else (),
                    )
                )
            for alt_index, alt in enumerate(alts):
                message = variant_pb2.VariantMessage(
                    correlation_id=f"{path.name}:{index}:{alt_index}",
                    record_index=index,
                    chromosome=record.chrom,
                    position=record.pos,
                    id=record.id or "",
                    reference=record.ref or "",
                    alternate=alt,
                    alt_index=alt_index,
                    all_alternates=alts,
                    has_quality=record.qual is not None,
                    quality=record.qual or 0.0,
                    filters=[str(name) for name in record.filter],
                    genotypes=genotype_columns(genotypes) if genotypes else None,
                )
                for key in record.info:
                    try:
                        value = record.info[key]
                    except ValueError:
                        # htslib cannot size an INFO value declared Number=G (a FORMAT-only
                        # number, VCF 4.2 section 1.4.2), e.g. MIP's INFO/PG: left out.
                        continue
                    message.info[key].CopyFrom(info_value(value))
                messages.append(message)
    return messages
