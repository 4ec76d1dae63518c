"""The VCF reader against real files: values asserted here were read off the raw VCF text."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pysam
import pytest
import vcf

from vcf_agent.schema import GenotypeCall, correlation_id, genotype_calls
from vcf_agent.services.ingest._vcf_reader import VcfFileError, VcfReader, file_digest
from vcf_agent.synthetic_vcf import (
    SyntheticVcfSpec,
    expected_variant_count,
    write_synthetic_vcf,
)
from vcf_agent.v1 import variant_pb2

PYVCF_DATA = Path(vcf.__file__).parent / "test"
EXAMPLE_40 = PYVCF_DATA / "example-4.0.vcf"
GATK = PYVCF_DATA / "gatk.vcf"
TABIXED = PYVCF_DATA / "tb.vcf.gz"


def _read(
    path: Path, *, batch_size: int = 1000, region: str | None = None, linger_ms: int = 3_600_000
) -> tuple[list[variant_pb2.VariantMessage], VcfReader]:
    reader = VcfReader(
        path,
        file_id=file_digest(path),
        job_id="job-1",
        tenant_id="tenant-a",
        source_name=path.name,
        batch_size=batch_size,
        # Batches close on size only by default: a linger deadline would cut them by timing (the
        # pure-Python encoder, VCF_AGENT_NO_EXTENSIONS=1, on a busy machine), not content.
        linger_ms=linger_ms,
        region=region,
    )
    with reader:
        variants = [v for batch in reader for v in batch.variants]
    return variants, reader


def _genotype(message: variant_pb2.VariantMessage, sample: str) -> GenotypeCall:
    return next(g for g in genotype_calls(message.genotypes) if g.sample == sample)


def _comparable(
    message: variant_pb2.VariantMessage,
    *,
    keep_line: bool = True,
    keep_origin: bool = True,
    keep_index: bool = True,
) -> bytes:
    """The message without the fields a comparison should ignore (timestamp always)."""
    copy = variant_pb2.VariantMessage()
    copy.CopyFrom(message)
    copy.ClearField("timestamp")
    if not keep_line:
        copy.ClearField("line_number")
    if not keep_origin:
        copy.ClearField("source_name")
        copy.ClearField("file_id")
        copy.ClearField("correlation_id")
    if not keep_index:
        copy.ClearField("record_index")
        copy.ClearField("correlation_id")
    return copy.SerializeToString(deterministic=True)


def test_example_40_hand_checked_records() -> None:
    variants, reader = _read(EXAMPLE_40)
    # 6 data lines: ALTs A | A | G,T | . | A | G,GTACT -> 7 variants, one REF-only record.
    assert reader.counters.records == 6
    assert reader.counters.variants == 7
    assert reader.counters.ref_only_records == 1
    assert reader.samples == ["NA00001", "NA00002", "NA00003"]
    assert [(v.record_index, v.alt_index) for v in variants] == [
        (0, 0),
        (1, 0),
        (2, 0),
        (2, 1),
        (4, 0),
        (5, 0),
        (5, 1),
    ]

    # 20 14370 rs6054257 G A 29 PASS NS=3;DP=14;AF=0.5;DB;H2 GT:GQ:DP:HQ
    #   0|0:48:1:51,51 1|0:48:8:51,51 1/1:43:5:.,.
    first = variants[0]
    assert (first.chromosome, first.position, first.id, first.reference, first.alternate) == (
        "20",
        14370,
        "rs6054257",
        "G",
        "A",
    )
    assert first.line_number == 19
    assert first.has_quality and first.quality == 29.0
    assert list(first.filters) == ["PASS"]
    assert list(first.info["NS"].ints.values) == [3]
    assert list(first.info["DP"].ints.values) == [14]
    assert list(first.info["AF"].floats.values) == [0.5]
    assert first.info["DB"].flag and first.info["H2"].flag
    assert (first.job_id, first.tenant_id, first.source_name) == ("job-1", "tenant-a", "example-4.0.vcf")
    assert first.file_id == hashlib.sha256(EXAMPLE_40.read_bytes()).hexdigest()
    na1 = _genotype(first, "NA00001")
    assert (list(na1.alleles), na1.phased, na1.depth, na1.genotype_quality) == ([0, 0], True, 1, 48)
    na3 = _genotype(first, "NA00003")
    assert (list(na3.alleles), na3.phased, na3.depth, na3.genotype_quality) == ([1, 1], False, 5, 43)
    assert list(na3.allele_depths) == []  # no AD in this FORMAT

    # 20 17330 . T A 3.0 q10 ...: no ID, a failing filter.
    second = variants[1]
    assert second.id == "" and list(second.filters) == ["q10"] and second.quality == 3.0
    assert list(_genotype(second, "NA00002").alleles) == [0, 1]

    # 20 1110696 rs6040355 A G,T 1e+03 PASS NS=2;DP=10;AF=0.333,0.667;AA=T;DB  1|2:21:6 2|1:2:0 2/2:35:4
    g_allele, t_allele = variants[2], variants[3]
    assert (g_allele.alternate, g_allele.alt_index) == ("G", 0)
    assert (t_allele.alternate, t_allele.alt_index) == ("T", 1)
    for split in (g_allele, t_allele):
        assert list(split.all_alternates) == ["G", "T"]
        assert split.quality == 1000.0
        # Number=. keeps every value on every ALT's message.
        assert list(split.info["AF"].floats.values) == pytest.approx([0.333, 0.667])
        assert list(split.info["AA"].strings.values) == ["T"]
        assert list(_genotype(split, "NA00001").alleles) == [1, 2]
        assert list(_genotype(split, "NA00003").alleles) == [2, 2]
    assert g_allele.correlation_id != t_allele.correlation_id

    # 20 1234567 microsat1 GTCT G,GTACT . PASS ... GT:GQ:DP ./.:35:4 0/2:17:2 1/1:40:3
    microsat = variants[5]
    assert (microsat.reference, list(microsat.all_alternates)) == ("GTCT", ["G", "GTACT"])
    assert not microsat.has_quality
    assert microsat.line_number == 24
    missing = _genotype(microsat, "NA00001")
    assert (list(missing.alleles), missing.phased, missing.depth, missing.genotype_quality) == (
        [-1, -1],
        False,
        4,
        35,
    )


def test_gatk_allele_depths_float_gq_and_missing_calls() -> None:
    variants, reader = _read(GATK)
    assert reader.samples[:2] == ["BLANK", "NA12878"]
    # chr22 42522392 rs28371738 G A 2951.95 . AC=2;AF=0.143;AN=14;...;DB;DP=1506;DS;...
    #   BLANK 0/0:6,0:6:18.04:0,18,211   NA12878 0/1:138,107:250:99:1961,0,3049
    first = variants[0]
    assert (first.chromosome, first.position, first.id) == ("chr22", 42522392, "rs28371738")
    assert first.quality == pytest.approx(2951.95, abs=1e-3)
    assert list(first.filters) == []
    assert list(first.info["AC"].ints.values) == [2]
    assert list(first.info["AF"].floats.values) == pytest.approx([0.143])
    assert list(first.info["AN"].ints.values) == [14]
    assert list(first.info["MQ"].floats.values) == pytest.approx([253.92])
    assert first.info["DS"].flag
    blank = _genotype(first, "BLANK")
    assert (list(blank.alleles), list(blank.allele_depths), blank.depth, blank.genotype_quality) == (
        [0, 0],
        [6, 0],
        6,
        18,
    )
    na12878 = _genotype(first, "NA12878")
    assert (list(na12878.alleles), list(na12878.allele_depths), na12878.depth, na12878.genotype_quality) == (
        [0, 1],
        [138, 107],
        250,
        99,
    )
    # chr22 42527471 ... BLANK ./.  NA12878 1/1:1,249:250:99:5741,478,0
    late = next(v for v in variants if v.position == 42527471)
    uncalled = _genotype(late, "BLANK")
    assert (
        list(uncalled.alleles),
        uncalled.depth,
        uncalled.genotype_quality,
        list(uncalled.allele_depths),
    ) == ([-1, -1], -1, -1, [])
    assert list(_genotype(late, "NA12878").allele_depths) == [1, 249]


@pytest.mark.parametrize("path", [EXAMPLE_40, GATK], ids=["example-4.0", "gatk"])
def test_line_numbers_point_at_the_raw_lines(path: Path) -> None:
    variants, _ = _read(path)
    lines = path.read_text().splitlines()
    for message in variants:
        raw = lines[message.line_number - 1].split("\t")
        assert (raw[0], int(raw[1]), raw[3]) == (message.chromosome, message.position, message.reference)
        assert raw[4].split(",")[message.alt_index] == message.alternate


def test_plain_bgzipped_and_bcf_give_identical_messages(tmp_path: Path) -> None:
    # BCF needs declared contigs, which example-4.0 lacks: add the one it uses.
    plain = tmp_path / "example.vcf"
    plain.write_text(EXAMPLE_40.read_text().replace("#CHROM", "##contig=<ID=20>\n#CHROM", 1))
    bgzipped = tmp_path / "example.vcf.gz"
    pysam.tabix_compress(os.fspath(plain), os.fspath(bgzipped))
    bcf = tmp_path / "example.bcf"
    with (
        pysam.VariantFile(os.fspath(plain)) as source,
        pysam.VariantFile(os.fspath(bcf), "wb", header=source.header) as sink,
    ):
        for record in source:
            sink.write(record)

    def read(path: Path) -> list[variant_pb2.VariantMessage]:
        with VcfReader(path, file_id="same-content", job_id="j", tenant_id="t", source_name="s") as reader:
            return [v for batch in reader for v in batch.variants]

    from_plain, from_gz, from_bcf = read(plain), read(bgzipped), read(bcf)
    assert len(from_plain) == 7
    assert [_comparable(m) for m in from_gz] == [_comparable(m) for m in from_plain]
    assert all(m.line_number == 0 for m in from_bcf)
    assert [_comparable(m, keep_line=False) for m in from_bcf] == [
        _comparable(m, keep_line=False) for m in from_plain
    ]


def test_correlation_ids_are_deterministic_and_unique() -> None:
    first, _ = _read(GATK)
    second, _ = _read(GATK)
    ids = [v.correlation_id for v in first]
    assert ids == [v.correlation_id for v in second]
    assert len(set(ids)) == len(ids)
    digest = file_digest(GATK)
    assert ids[0] == correlation_id("tenant-a", digest, 0, 0)


def test_timestamp_is_shared_within_a_batch(tmp_path: Path) -> None:
    # One batch whatever the machine's load: the linger would cut it after 50 ms.
    variants, _ = _read(GATK, batch_size=1000, linger_ms=60_000)
    assert variants[0].timestamp.seconds > 0
    assert len({(v.timestamp.seconds, v.timestamp.nanos) for v in variants}) == 1


def test_batches_respect_batch_size_and_file_order(tmp_path: Path) -> None:
    path = write_synthetic_vcf(
        tmp_path / "multi.vcf", SyntheticVcfSpec(records=300, samples=2, seed=3, multi_allelic_fraction=0.3)
    )
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="s", batch_size=7) as reader:
        batches = list(reader.batches())
    assert all(0 < b.variant_count <= 7 for b in batches)
    assert sum(b.variant_count for b in batches) == reader.counters.variants == expected_variant_count(path)
    decoded = [b.decode() for b in batches]
    keys = [(v.record_index, v.alt_index) for batch in decoded for v in batch.variants]
    assert keys == sorted(keys)
    for batch, message in zip(batches, decoded, strict=True):
        assert len(message.variants) == batch.variant_count
        assert (batch.chromosome, batch.position) == (
            message.variants[0].chromosome,
            message.variants[0].position,
        )
        assert batch.first_record_index == message.variants[0].record_index
        assert batch.last_record_index == message.variants[-1].record_index


def test_region_fetch_on_a_tabix_indexed_file() -> None:
    # tb.vcf.gz (+ .tbi): 20:14370 A, 20:17330 A, 20:1110696 G,T (QUAL 67), 20:1230237 . , 20:1234567 G,GTACT
    variants, reader = _read(TABIXED, region="20:1110000-1240000")
    assert [(v.position, v.alternate, v.alt_index) for v in variants] == [
        (1110696, "G", 0),
        (1110696, "T", 1),
        (1234567, "G", 0),
        (1234567, "GTACT", 1),
    ]
    assert variants[0].quality == 67.0
    assert reader.counters.records == 3
    assert reader.counters.ref_only_records == 1
    assert all(v.line_number == 0 for v in variants)


def test_region_fetch_on_generated_indexed_file(tmp_path: Path) -> None:
    path = write_synthetic_vcf(
        tmp_path / "indexed.vcf.gz", SyntheticVcfSpec(records=2000, samples=1, seed=9), bgzip=True, index=True
    )
    everything, _ = _read(path)
    expected = [
        _comparable(v, keep_line=False, keep_index=False)
        for v in everything
        if v.chromosome == "chr2" and 5000 <= v.position <= 20000
    ]
    assert expected
    region, _ = _read(path, region="chr2:5000-20000")
    # Same content; record_index (and so correlation_id) counts within the region.
    assert [_comparable(v, keep_line=False, keep_index=False) for v in region] == expected
    assert [v.record_index for v in region][:1] == [0]


def test_generator_is_deterministic_and_parses(tmp_path: Path) -> None:
    spec = SyntheticVcfSpec(records=500, samples=3, seed=42, multi_allelic_fraction=0.2, indel_fraction=0.3)
    a = write_synthetic_vcf(tmp_path / "a.vcf", spec)
    b = write_synthetic_vcf(tmp_path / "b.vcf", spec)
    assert a.read_bytes() == b.read_bytes()
    assert write_synthetic_vcf(tmp_path / "c.vcf", SyntheticVcfSpec(records=500, seed=43)).read_bytes() != (
        a.read_bytes()
    )
    gz = write_synthetic_vcf(tmp_path / "a.vcf.gz", spec, bgzip=True)
    plain_variants, plain_reader = _read(a)
    gz_variants, _ = _read(gz)
    assert plain_reader.counters.records == 500
    assert len(plain_variants) == expected_variant_count(a) == expected_variant_count(gz)
    assert any(len(v.all_alternates) > 1 for v in plain_variants)
    assert any(len(v.reference) != len(v.alternate) for v in plain_variants)
    # Other bytes and name, so another file_id, correlation ids and source; the rest is equal.
    assert [_comparable(v, keep_line=False, keep_origin=False) for v in gz_variants] == [
        _comparable(v, keep_line=False, keep_origin=False) for v in plain_variants
    ]


def test_file_digest_streams_in_chunks() -> None:
    assert file_digest(GATK, chunk_size=1000) == hashlib.sha256(GATK.read_bytes()).hexdigest()


def test_bad_records_are_dead_lettered_and_reading_goes_on(tmp_path: Path) -> None:
    text = EXAMPLE_40.read_text().splitlines(keepends=True)
    header = [line for line in text if line.startswith("#")]
    body = [line for line in text if not line.startswith("#")]
    bad = "20\tnot-a-position\t.\tA\tG\t.\tPASS\t.\tGT\t0/1\t0/1\t0/1\n"
    path = tmp_path / "bad.vcf"
    path.write_text("".join([*header, body[0], bad, *body[1:]]))
    variants, reader = _read(path)
    assert reader.dead_lettered == 1
    (letter,) = reader.take_dead_letters()
    assert letter.line_number == len(header) + 2
    assert (letter.job_id, letter.file_name) == ("job-1", "bad.vcf")
    assert reader.take_dead_letters() == []
    assert len(variants) == 7
    # The bad line keeps its record index, so later line numbers stay exact.
    assert variants[1].line_number == len(header) + 3


def test_an_unreadable_file_raises_vcf_file_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.vcf"
    path.write_bytes(b"this is not a VCF\n")
    with pytest.raises(VcfFileError):
        VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="junk.vcf")


def test_close_from_another_thread_stops_iteration(tmp_path: Path) -> None:
    path = write_synthetic_vcf(tmp_path / "long.vcf", SyntheticVcfSpec(records=3000, samples=1, seed=1))
    reader = VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="s", batch_size=10)
    batches = reader.batches()
    next(batches)
    closer = threading.Thread(target=reader.close)
    closer.start()
    closer.join()
    remaining = sum(1 for _ in batches)
    assert remaining <= 1
    assert reader.counters.records < 3000
    with pytest.raises(VcfFileError):
        next(reader.batches())
