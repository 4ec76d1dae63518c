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
from vcf_agent.analysis._spliced_results import (
    splice_results,
    splice_results_py,
    split_results_py,
    variant_batch_parts,
    variant_batch_parts_py,
)
from vcf_agent.compiled import compiled_module
from vcf_agent.config import Settings
from vcf_agent.schema import carried_variant, length_delimited, read_varint, serialized_message, split_field
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


def first_batch(path: Path) -> bytes:
    """A file's first serialized VariantBatch as ingest publishes it."""
    reader = VcfReader(path, file_id="f" * 64, job_id="job-1", tenant_id="lab-a", source_name=path.name)
    with reader:
        return next(iter(reader.batches())).payload


def answers_to(path: Path, tmp_path: Path) -> tuple[bytes, bytes]:
    """The variant batch the real local worker is sent for a file's first batch, as it gets it,
    and the serialized AnalysisResultBatch it publishes."""
    variants = variant_pb2.VariantBatch.FromString(first_batch(path))
    request = analysis_requests(variants, "local", ["local"], provider_deadline(30.0))
    (sent,), _ = split_field(request.SerializeToString(), wire.ANALYSIS_REQUEST_BATCH_VARIANT_BATCH_TAG)
    settings = Settings(data_dir=tmp_path, bus_url=f"memory://{path.name}")
    record = asyncio.run(published_answers(settings, request))
    return sent, serialized_message(record.value, record.headers, analysis_pb2.AnalysisResultBatch)


FILES = {"gatk": GATK_VCF, "1kg": KG_VCF}


@pytest.fixture(scope="module")
def worker_batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    root = tmp_path_factory.mktemp("spliced")
    return {name: answers_to(path, root / name) for name, path in FILES.items()}


@pytest.fixture(scope="module")
def spliced_batches(worker_batches: dict[str, tuple[bytes, bytes]]) -> dict[str, bytes]:
    """The worker's published answers, by file."""
    return {name: published for name, (_, published) in worker_batches.items()}


@pytest.fixture(scope="module")
def variant_batches() -> dict[str, bytes]:
    """Each file's first VariantBatch as ingest publishes it."""
    return {name: first_batch(path) for name, path in FILES.items()}


# --- the worker's side: the variant batch's parts, and the answers spliced after the variants ---


def test_a_variant_batchs_parts_are_its_first_variant_count_and_other_fields(
    variant_batches: dict[str, bytes],
) -> None:
    for payload in variant_batches.values():
        batch = variant_pb2.VariantBatch.FromString(payload)
        without_variants = variant_pb2.VariantBatch()
        without_variants.CopyFrom(batch)
        del without_variants.variants[:]
        for parts in (variant_batch_parts_py, variant_batch_parts):
            first, count, rest = parts(payload)
            assert count == len(batch.variants) > 0
            assert first is not None
            assert variant_pb2.VariantMessage.FromString(first) == batch.variants[0]
            assert variant_pb2.VariantBatch.FromString(rest) == without_variants
    assert variant_batch_parts(b"") == variant_batch_parts_py(b"") == (None, 0, b"")


def test_the_worker_publishes_each_answer_with_its_variant_spliced_in_first(
    worker_batches: dict[str, tuple[bytes, bytes]],
) -> None:
    for payload, published in worker_batches.values():
        split = split_results(published)
        assert split is not None
        answers = [answer for _, answer in split[0]]
        for splice in (splice_results_py, splice_results):
            assert splice(payload, answers) == published
            # One answer per variant, or nothing is spliced.
            with pytest.raises(ValueError):
                splice(payload, answers[:-1])
            with pytest.raises(ValueError):
                splice(payload, [*answers, answers[0]])


def test_each_variant_goes_on_as_it_arrived_but_its_info(
    worker_batches: dict[str, tuple[bytes, bytes]],
) -> None:
    """Only providers read INFO: the results (and the writes made of them) carry every other
    field of the variant, byte for byte as ingest wrote it (schema.carried_variant)."""
    for payload, published in worker_batches.values():
        arrived, _ = split_field(payload, wire.VARIANT_BATCH_VARIANTS_TAG)
        split = split_results(published)
        assert split is not None
        assert len(split[0]) == len(arrived)
        for variant, (carried_field, _) in zip(arrived, split[0], strict=True):
            size, start = read_varint(carried_field, 0)
            carried = carried_field[start:]
            assert size == len(carried)
            sent = variant_pb2.VariantMessage.FromString(variant)
            assert sent.info
            sent.ClearField("info")
            assert variant_pb2.VariantMessage.FromString(carried) == sent
            assert carried_variant(variant) == carried


@needs_compiled
def test_the_compiled_worker_steps_give_the_twins_result_for_every_truncation_and_byte_flip(
    variant_batches: dict[str, bytes],
) -> None:
    assert _LOCAL_WIRE is not None
    batch = variant_pb2.VariantBatch.FromString(variant_batches["gatk"])
    del batch.variants[2:]
    # A field besides the variants, after them (as ingest writes them), to be kept.
    batch.providers.extend(["local", "claude"])
    small = batch.SerializeToString()
    answers = [b"\x0a\x02id", b""]

    def both(data: bytes) -> tuple[object, object]:
        results: list[object] = []
        for parts, splice in (
            (_LOCAL_WIRE.variant_batch_parts, _LOCAL_WIRE.splice_results),
            (variant_batch_parts_py, splice_results_py),
        ):
            try:
                got: object = parts(data)
            except ValueError:
                got = ValueError
            try:
                spliced: object = splice(data, answers)
            except ValueError:
                spliced = ValueError
            results.append((got, spliced))
        return results[0], results[1]

    for cut in range(len(small) + 1):
        compiled, twin = both(small[:cut])
        assert compiled == twin, cut
    rng = random.Random(7)
    for at in range(len(small)):
        flipped = bytearray(small)
        flipped[at] = rng.randrange(256)
        compiled, twin = both(bytes(flipped))
        assert compiled == twin, at


# --- the aggregator's side: the results split back ---


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
