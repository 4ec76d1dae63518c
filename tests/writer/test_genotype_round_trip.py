"""Every genotype of real multi-sample files read back from both stores equals htslib's.

Files nobody here wrote: pyvcf3's 1000 Genomes extract (629 samples, diploid, phased and
unphased, multi-allelic records) and the VCF 4.1 specification's example (section 1.1 of
VCFv4.1: phased `1|0`, unphased `1/1`, a multi-allelic `1|2`, a missing call `./.` in
example-4.1.vcf's variant) plus pyvcf3's ploidy variant of it (haploid `0`, triploid
`1/1/1`, on chrX). htslib reads them through pysam.

What each store must give back (VCFv4.1 section 1.4.2, GT: allele indices, `|` phased,
`/` unphased, `.` a missing allele):
- LanceDB keeps every call of every sample at every ALT allele, as text
  htslib's alleles and phasing spell, and a row of its carriers table for each
  call holding that ALT allele;
- the graph links a sample to a variant only when its genotype holds that
  ALT allele (a carrier) and the graph holds the variant (it names a gene or
  carries a verdict, issue 15's rule); the call itself is LanceDB's, and a
  query by sample in LanceDB finds every variant the sample carries.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections import defaultdict
from pathlib import Path

import pysam
import pytest
import vcf

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.services.writer import VariantQuery
from vcf_agent.services.writer._graph_store import GRAPH_VERDICTS
from vcf_agent.v1 import events_pb2

PYVCF_DATA = Path(vcf.__file__).parent / "test"
ONE_KG = Path(__file__).resolve().parents[1] / "data" / "vcf" / "1kg.vcf.gz"


def _alleles(call: pysam.libcbcf.VariantRecordSample) -> tuple[int | None, ...]:
    return tuple(call["GT"]) if "GT" in call else ()


def _htslib_genotype(call: pysam.libcbcf.VariantRecordSample) -> str:
    """GT as VCF text from htslib's parsed alleles and phase (a missing call reads as `.`)."""
    alleles = _alleles(call)
    if not alleles:
        return "."
    separator = "|" if call.phased else "/"
    return separator.join("." if allele is None else str(allele) for allele in alleles)


def _plain(source: Path, tmp_path: Path) -> Path:
    """pyvcf3 ships the extract as plain gzip, which htslib cannot open; both sides read it unpacked."""
    if source.suffix != ".gz":
        return source
    out = tmp_path / source.stem
    with gzip.open(source, "rb") as packed, out.open("wb") as plain:
        shutil.copyfileobj(packed, plain)
    return out


@pytest.mark.parametrize(
    "source",
    [ONE_KG, PYVCF_DATA / "example-4.1.vcf", PYVCF_DATA / "example-4.1-ploidy.vcf"],
    ids=lambda path: path.name,
)
async def test_every_genotype_read_back_equals_htslibs(source: Path, tmp_path: Path) -> None:
    path = _plain(source, tmp_path)
    # (record index, ALT) -> sample -> genotype text, and the samples carrying that ALT.
    expected: dict[tuple[int, str], dict[str, str]] = {}
    carriers: dict[tuple[int, str], set[str]] = {}
    with pysam.VariantFile(os.fspath(path)) as records:
        samples = list(records.header.samples)
        for index, record in enumerate(records):
            for alt_index, alt in enumerate(record.alts or ()):
                if alt == ".":
                    continue
                calls = {name: record.samples[name] for name in samples}
                expected[(index, alt)] = {name: _htslib_genotype(call) for name, call in calls.items()}
                carriers[(index, alt)] = {
                    name for name, call in calls.items() if alt_index + 1 in _alleles(call)
                }
    assert len(samples) > 1 and expected
    if source.name == "example-4.1.vcf":
        # Checked by hand against the file: 20 1110696 A G,T with 1|2, 2|1 and 2/2 carries T in
        # every sample; 20 14370 G A with 0|0, 1|0, 1/1 is carried by NA00002 and NA00003 only.
        assert expected[(2, "T")] == {"NA00001": "1|2", "NA00002": "2|1", "NA00003": "2/2"}
        assert carriers[(2, "T")] == {"NA00001", "NA00002", "NA00003"}
        assert carriers[(0, "A")] == {"NA00002", "NA00003"}
    if source.name == "example-4.1-ploidy.vcf":
        # X 60034 with a haploid `0`, `1|0` and a triploid `1/1/1`.
        assert expected[(0, "A")] == {"NA00001": "0", "NA00002": "1|0", "NA00003": "1/1/1"}

    settings = Settings(data_dir=tmp_path / "data", bus_url=f"memory://gt-{tmp_path.name}")
    async with LocalPipeline(settings) as pipeline:
        job_id = await pipeline.submit(path)
        job = await pipeline.wait(job_id, timeout_s=300)
        assert events_pb2.JobState.Name(job.state) in ("JOB_STATE_COMPLETE",), job.error
        lance, graph = pipeline.writer.lance, pipeline.writer.graph
        stored, total = lance.query(VariantQuery(job_id=job_id, limit=100_000))
        assert total == len(expected) == job.counts.stored

        by_sample: dict[str, set[str]] = defaultdict(set)
        graph_edges = 0
        for variant in stored:
            key = (variant.record_index, variant.alternate)
            assert {g.sample: g.genotype for g in variant.genotypes} == expected[key], key
            assert [g.sample for g in variant.genotypes] == samples
            edges = graph.carriers(variant.correlation_id, variant.tenant_id)
            in_graph = bool(variant.gene) or variant.classification in GRAPH_VERDICTS
            assert edges == (sorted(carriers[key]) if in_graph else []), key
            graph_edges += len(edges)
            for name in carriers[key]:
                by_sample[name].add(variant.correlation_id)
        assert graph.counts(job_id).carried_by == graph_edges

        # The carriers table holds one row per carrying call, with htslib's genotype and phase.
        key_of = {variant.correlation_id: (variant.record_index, variant.alternate) for variant in stored}
        calls = lance.carrier_calls(job_id).to_pylist()
        assert len(calls) == sum(len(found) for found in carriers.values())
        for call in calls:
            key = key_of[call["correlation_id"]]
            assert call["sample"] in carriers[key], (key, call["sample"])
            assert call["genotype"] == expected[key][call["sample"]], key
            assert call["phased"] == ("|" in call["genotype"]), key
            assert call["tenant_id"] == job.tenant_id and call["job_id"] == job_id

        # A query by sample over LanceDB finds every variant the sample carries, in the graph or not.
        for name in samples[:5]:
            found, count = lance.query(VariantQuery(job_id=job_id, sample=name, limit=100_000))
            assert {v.correlation_id for v in found} == by_sample[name] and count == len(by_sample[name])
