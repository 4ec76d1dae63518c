"""The aggregator's split of result batches written variant first: the compiled split
(_local_wire.split_results) against its pure-Python twin (analysis._spliced_results), and both
against protobuf's reading of the same bytes.

Inputs are the real local worker's answers to the variants of real files: PyVCF3's gatk.vcf
(GATK output, 3 samples) and tests/data/vcf/1kg.vcf.gz (1000 Genomes, 629 samples, so every
length is a multi-byte varint); batches that are not spliced; and every truncation and a
random byte at every position of a spliced batch: for each, both give the same split, both
None, or both raise ValueError, and a split is what protobuf reads.

Without the extension (not built, or VCF_AGENT_NO_EXTENSIONS=1) the compiled cases skip and the
twin's are checked against protobuf alone.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import vcf as pyvcf  # pyvcf3: only its bundled test files are used

from vcf_agent.analysis import analysis_requests, provider_deadline, split_results
from vcf_agent.analysis._spliced_results import split_results_py
from vcf_agent.compiled import compiled_module
from vcf_agent.config import Settings
from vcf_agent.schema import length_delimited, read_varint, serialized_message, split_field
from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.v1 import analysis_pb2, variant_pb2
from vcf_agent.v1 import wire_numbers as wire

from ..router._local_worker import published_answers

GATK_VCF = Path(pyvcf.__file__).parent / "test" / "gatk.vcf"
KG_VCF = Path(__file__).parents[1] / "data" / "vcf" / "1kg.vcf.gz"
RESULTS_TAG = wire.ANALYSIS_RESULT_BATCH_RESULTS_TAG
_LOCAL_WIRE = compiled_module("vcf_agent.analysis._local_wire")
needs_compiled = pytest.mark.skipif(
    _LOCAL_WIRE is None, reason="the compiled local wire format is not built or VCF_AGENT_NO_EXTENSIONS=1"
)

Outcome = tuple[list[tuple[bytes, bytes]], bytes] | None | type[ValueError]


def outcome(split: object, batch: bytes) -> Outcome:
    try:
        return split(batch)  # type: ignore[operator, no-any-return]
    except ValueError:
        return ValueError


def answers_to(path: Path, tmp_path: Path) -> bytes:
    """The serialized AnalysisResultBatch the real local worker publishes for a file's first batch."""
    reader = VcfReader(path, file_id="f" * 64, job_id="job-1", tenant_id="lab-a", source_name=path.name)
    with reader:
        first = next(iter(reader.batches()))
    variants = variant_pb2.VariantBatch.FromString(first.payload)
    request = analysis_requests(variants, "local", ["local"], provider_deadline(30.0))
    settings = Settings(data_dir=tmp_path, bus_url=f"memory://{path.name}")
    record = asyncio.run(published_answers(settings, request))
    return serialized_message(record.value, record.headers, analysis_pb2.AnalysisResultBatch)


@pytest.fixture(scope="module")
def spliced_batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("spliced")
    files = {"gatk": GATK_VCF, "1kg": KG_VCF}
    return {name: answers_to(path, root / name) for name, path in files.items()}


def test_a_spliced_batch_splits_into_what_protobuf_reads(spliced_batches: dict[str, bytes]) -> None:
    for batch in spliced_batches.values():
        whole = analysis_pb2.AnalysisResultBatch.FromString(batch).results
        split = split_results(batch)
        assert split is not None
        spliced, answers = split
        assert len(spliced) == len(whole) > 0
        parsed = analysis_pb2.AnalysisResultBatch.FromString(answers).results
        for (variant_field, answer), result, answer_alone in zip(spliced, whole, parsed, strict=True):
            size, start = read_varint(variant_field, 0)
            assert size == len(variant_field) - start
            assert variant_pb2.VariantMessage.FromString(variant_field[start:]) == result.variant
            without = analysis_pb2.AnalysisResult()
            without.CopyFrom(result)
            without.ClearField("variant")
            assert answer_alone == without
            assert analysis_pb2.AnalysisResult.FromString(answer) == without
    # 1000 Genomes' variants carry 629 calls each: every length is a varint of two bytes or more.
    cohort = split_results(spliced_batches["1kg"])
    assert cohort is not None
    assert min(len(field) for field, _ in cohort[0]) > 128


def test_a_batch_not_written_variant_first_is_not_split(spliced_batches: dict[str, bytes]) -> None:
    batch = spliced_batches["gatk"]
    # Parsed and written again by protobuf, answers come before the variant.
    plain = analysis_pb2.AnalysisResultBatch.FromString(batch).SerializeToString()
    for split in (split_results_py, split_results):
        assert split(plain) is None
        assert split(b"") is None
        # Another field after the results: the batch is read whole.
        assert split(batch + b"\x10\x01") is None


@needs_compiled
def test_the_compiled_split_gives_the_twins_result_for_every_truncation_and_byte_flip(
    spliced_batches: dict[str, bytes],
) -> None:
    assert _LOCAL_WIRE is not None
    compiled = _LOCAL_WIRE.split_results
    batch = spliced_batches["gatk"]
    # Two results, so a cut falls in the first, at the seam and in the second.
    small = first_results(batch, 2)
    assert len(analysis_pb2.AnalysisResultBatch.FromString(small).results) == 2
    for cut in range(len(small) + 1):
        assert outcome(compiled, small[:cut]) == outcome(split_results_py, small[:cut]), cut
    rng = random.Random(5)
    for at in range(len(small)):
        flipped = bytearray(small)
        flipped[at] = rng.randrange(256)
        assert outcome(compiled, bytes(flipped)) == outcome(split_results_py, bytes(flipped)), at
    for name, whole in spliced_batches.items():
        assert compiled(whole) == split_results_py(whole), name


def test_a_truncated_batch_splits_only_where_protobuf_reads_whole_results(
    spliced_batches: dict[str, bytes],
) -> None:
    small = first_results(spliced_batches["gatk"], 2)
    splits = 0
    for cut in range(len(small)):
        truncated = small[:cut]
        split = outcome(split_results, truncated)
        if not isinstance(split, tuple):
            continue
        # Only a cut between results leaves a batch to split: protobuf reads the same results.
        splits += 1
        whole = analysis_pb2.AnalysisResultBatch.FromString(truncated).results
        assert len(analysis_pb2.AnalysisResultBatch.FromString(split[1]).results) == len(whole)
    assert splits == 1  # the cut after the first result (the empty batch is not spliced)


def first_results(batch: bytes, count: int) -> bytes:
    """A batch of the first `count` results of `batch`, as they are (each variant first)."""
    results, _ = split_field(batch, RESULTS_TAG)
    return b"".join(length_delimited(RESULTS_TAG, result) for result in results[:count])
