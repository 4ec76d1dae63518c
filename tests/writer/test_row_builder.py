"""The row builder against the pure-Python oracle, on protos and on raw wire bytes.

RowCollector parses DatabaseWriteBatch bytes itself instead of going through upb, so
every rule upb applies (merging, last-wins, unknown fields, UTF-8 checks, rejection of
corrupt input) is checked here against upb plus the old pure-Python builder. Every test
runs twice: with the compiled builder (skipped when it is not built or
VCF_AGENT_NO_EXTENSIONS=1) and with its pure-Python twin (_row_builder_py.py).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator, Sequence
from itertools import pairwise

import pyarrow as pa
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from tests.writer._reference_rows import reference_rows
from vcf_agent.compiled import NO_EXTENSIONS_VARIABLE, compiled_module
from vcf_agent.schema import GenotypeCall, PayloadError, genotype_calls, genotype_columns
from vcf_agent.services.writer._rows import (
    ANALYSIS_SCHEMA,
    CALL_SCHEMA,
    VARIANT_SCHEMA,
    RowCollector,
    WriteRows,
    build_rows,
)
from vcf_agent.v1 import analysis_pb2, events_pb2, variant_pb2


@pytest.fixture(autouse=True, params=["compiled", "python"])
def builder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which row builder RowCollector uses in this test."""
    if request.param == "python":
        monkeypatch.setenv(NO_EXTENSIONS_VARIABLE, "1")
    elif compiled_module("vcf_agent.services.writer._row_builder") is None:
        pytest.skip("the compiled row builder is not built or VCF_AGENT_NO_EXTENSIONS=1")
    return str(request.param)


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62_135_596_800, 253_402_300_799


# --- wire encoding, for payloads protobuf itself would never produce ---


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def vfield(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def lfield(field: int, data: bytes) -> bytes:
    return key(field, 2) + varint(len(data)) + data


def sfield(field: int, text: str) -> bytes:
    return lfield(field, text.encode())


def dfield(field: int, value: float) -> bytes:
    return key(field, 1) + struct.pack("<d", value)


def f32field(field: int, raw: bytes = b"\x01\x02\x03\x04") -> bytes:
    return key(field, 5) + raw


def f64field(field: int, raw: bytes = b"\x01\x02\x03\x04\x05\x06\x07\x08") -> bytes:
    return key(field, 1) + raw


def unknown_fields(field: int) -> bytes:
    """One unknown field of every wire type a proto3 reader must skip."""
    return (
        vfield(field, 2**40 + 3)
        + f64field(field + 1)
        + lfield(field + 2, b"\xff\x00junk")
        + f32field(field + 3)
    )


def batch_payload(
    writes: Sequence[events_pb2.DatabaseWrite], markers: Sequence[variant_pb2.JobMarker] = ()
) -> bytes:
    return events_pb2.DatabaseWriteBatch(writes=writes, markers=markers).SerializeToString()


# --- comparison ---


def _normalized(value: object) -> object:
    # float.hex tells -0.0 from 0.0 and makes NaN equal to itself.
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {name: _normalized(item) for name, item in value.items()}
    return value


def _details(column: pa.ChunkedArray) -> list[object]:
    # The C side keeps the raw bytes minus field 16, upb re-serialises: equal as messages.
    return [
        None if raw is None else analysis_pb2.AnalysisResult.FromString(raw) for raw in column.to_pylist()
    ]


def _values(column: pa.ChunkedArray) -> object:
    # As microseconds: datetime cannot hold every int64 timestamp the wire can carry.
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return _normalized(column.to_pylist())


def assert_tables_equal(name: str, actual: pa.Table, expected: pa.Table) -> None:
    assert actual.schema.equals(expected.schema), f"{name} schema:\n{actual.schema}\n!=\n{expected.schema}"
    assert actual.num_rows == expected.num_rows, f"{name}: {actual.num_rows} rows != {expected.num_rows}"
    for column in expected.column_names:
        if column == "detail":
            got, want = _details(actual[column]), _details(expected[column])
        else:
            got, want = _values(actual[column]), _values(expected[column])
        if got != want:
            assert isinstance(got, list) and isinstance(want, list)
            row = next(i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w)
            pytest.fail(f"{name}.{column} differs first at row {row}: {got[row]!r} != expected {want[row]!r}")


def assert_rows_equal(actual: WriteRows, expected: WriteRows) -> None:
    # The C side assembles Arrow buffers by hand: offsets, bitmaps and UTF-8 must hold up.
    for table in (actual.variants, actual.analyses, actual.calls):
        table.validate(full=True)
    assert_tables_equal("variants", actual.variants, expected.variants)
    assert_tables_equal("analyses", actual.analyses, expected.analyses)
    assert_tables_equal("calls", actual.calls, expected.calls)


def assert_markers(returned: Sequence[bytes], expected: Sequence[variant_pb2.JobMarker]) -> None:
    assert all(isinstance(raw, bytes) for raw in returned)
    assert [variant_pb2.JobMarker.FromString(raw) for raw in returned] == list(expected)


def collect(payloads: Sequence[bytes]) -> tuple[WriteRows, list[bytes]]:
    collector = RowCollector()
    markers: list[bytes] = []
    for payload in payloads:
        markers.extend(collector.add(payload))
    rows = collector.take()
    assert len(collector) == 0
    return rows, markers


def assert_like_upb(payloads: Sequence[bytes]) -> None:
    """Collector rows and markers equal upb's parse of the same bytes run through the oracle."""
    batches = [events_pb2.DatabaseWriteBatch.FromString(payload) for payload in payloads]
    writes = [write for batch in batches for write in batch.writes]
    collector = RowCollector()
    markers: list[bytes] = []
    for payload in payloads:
        markers.extend(collector.add(payload))
    assert len(collector) == len(writes)
    expected = reference_rows(writes)
    assert_rows_equal(collector.take(), expected)
    assert_markers(markers, [marker for batch in batches for marker in batch.markers])
    assert_rows_equal(build_rows(writes), expected)


def split(
    items: Sequence[events_pb2.DatabaseWrite], cuts: Sequence[int]
) -> list[list[events_pb2.DatabaseWrite]]:
    bounds = [0, *cuts, len(items)]
    return [list(items[start:end]) for start, end in pairwise(bounds)]


# --- hand-made writes ---


def call(
    sample: str,
    alleles: Sequence[int],
    *,
    phased: bool = False,
    depth: int = 0,
    gq: int = 0,
    allele_depths: Sequence[int] = (),
) -> GenotypeCall:
    return GenotypeCall(sample, tuple(alleles), phased, depth, gq, tuple(allele_depths))


def zigzag(value: int) -> bytes:
    """A sint32 value's varint."""
    return varint((value << 1) ^ (value >> 63))


def result(
    provider: str,
    *,
    status: int = 1,
    gene: str = "",
    variant_class: str = "",
    completed: tuple[int, int] | None = None,
    with_variant: bool = False,
    **fields: object,
) -> analysis_pb2.AnalysisResult:
    message = analysis_pb2.AnalysisResult(provider=provider, **fields)
    message.status = status
    if gene or variant_class:
        message.annotation.gene = gene
        message.annotation.variant_class = variant_class
        message.annotation.samples.add(sample="NA1", zygosity="het", allele_balance=0.5)
    if completed is not None:
        message.completed_at.seconds, message.completed_at.nanos = completed
    if with_variant:
        message.variant.chromosome = "chrEcho"
        message.variant.genotypes.CopyFrom(genotype_columns([GenotypeCall("echoed", (0, 1))]))
        message.variant.info["DP"].ints.values.append(12)
    return message


def write(
    cid: str,
    *,
    calls: Sequence[GenotypeCall] = (),
    results: Sequence[analysis_pb2.AnalysisResult] = (),
    quality: float | None = 30.5,
    alt_index: int = 0,
    timestamp: tuple[int, int] | None = (1_700_000_000, 123_456_789),
    filters: Sequence[str] = (),
    **fields: object,
) -> events_pb2.DatabaseWrite:
    message = events_pb2.DatabaseWrite(
        correlation_id=cid, results=results, **{"job_id": "job-1", "tenant_id": "tenant-1", **fields}
    )
    variant = message.variant
    variant.correlation_id = cid
    variant.file_id = "f" * 64
    variant.source_name = "in.vcf.gz"
    variant.record_index = 7
    variant.chromosome = "chr1"
    variant.position = 12345
    variant.id = "rs1"
    variant.reference = "A"
    variant.alternate = "G"
    variant.all_alternates.extend(["G", "T"])
    variant.alt_index = alt_index
    if quality is not None:
        variant.has_quality = True
        variant.quality = quality
    variant.filters.extend(filters)
    if calls:
        variant.genotypes.CopyFrom(genotype_columns(calls))
    variant.info["AF"].floats.values.append(0.25)
    if timestamp is not None:
        variant.timestamp.seconds, variant.timestamp.nanos = timestamp
    return message


def hand_made_writes() -> list[events_pb2.DatabaseWrite]:
    return [
        write("v-none", calls=(), quality=None, filters=[], classification="benign"),
        write(
            "v-one",
            calls=[call("NA00001", [0, 1], depth=14, gq=99, allele_depths=[7, 7])],
            results=[
                result("local", gene="BRCA1", variant_class="snv", completed=(1_700_000_100, 999_999_999))
            ],
            priority_tier="P1",
        ),
        write(
            "v-three",
            calls=[
                call("NA00001", [1, 1], phased=True, depth=-1, gq=-1),
                call("NA00002", [-1, -1]),
                call("NA00003", [], depth=INT32_MAX, gq=INT32_MIN, allele_depths=[INT32_MIN, 0, INT32_MAX]),
            ],
            filters=["q10", "s50"],
            partial=True,
            missing_providers=["gpt", "claude"],
            results=[
                result("local", status=7, completed=(1_600_000_000, 0)),
                result("gpt", status=2, error="timeout", with_variant=True, gene="", variant_class="indel"),
                result("local", status=1, gene="TP53", model="m-2", confidence=0.75, rationale="why"),
            ],
        ),
        write(
            "v-multi-digit",
            alt_index=11,
            calls=[call("S1", [0, 12], phased=True), call("S2", [12, -1]), call("S3", [10, 2, 12])],
            quality=0.0,
            results=[result("claude", with_variant=True, classification="pathogenic", confidence=-0.0)],
        ),
        write(
            "v-ünï-😀",
            calls=[call("Ñame-𝄞", [0, 1]), call("", [1]), call("名前", [0])],
            results=[result("prövider", gene="GÈNE-中", variant_class="ß"), result("", status=0)],
            job_id="",
            tenant_id="tënant",
            classification="",
            timestamp=None,
        ),
        write("", calls=[call("x", [1, 0])], quality=-1e300),
        # Same id as earlier ones: the last write wins but keeps its first position.
        write(
            "v-one",
            calls=[call("NA00009", [1, 1])],
            results=[result("late", status=-3)],
            classification="new",
        ),
        write("v-none", quality=None, timestamp=(TIMESTAMP_MIN, 0)),
        write(
            "v-carrier-edges",
            alt_index=INT32_MAX,
            calls=[call("min", [INT32_MIN, INT32_MAX]), call("max", [INT32_MAX])],
            timestamp=(TIMESTAMP_MAX, 999_999_999),
        ),
        write("v-alt-minus-two", alt_index=-2, calls=[call("missing", [-1, 0]), call("ref", [0, 0])]),
        write("v-nul\x00byte", calls=[call("a\x00b", [0, 1])], results=[result("p\x00q", gene="g\x00")]),
    ]


def test_hand_made_writes_match_the_reference() -> None:
    writes = hand_made_writes()
    expected = reference_rows(writes)
    assert_rows_equal(build_rows(writes), expected)

    # Cuts put the duplicates of "v-one" and "v-none" in other payloads than their first write.
    for cuts in ([], [3], [2, 7], [1, 6, 8]):
        payloads = [batch_payload(chunk) for chunk in split(writes, cuts)]
        rows, markers = collect(payloads)
        assert markers == []
        assert_rows_equal(rows, expected)


def test_hand_made_expectations_hold_in_the_reference() -> None:
    """Guards the oracle itself against a broken copy: a few values spelled out."""
    rows = reference_rows(hand_made_writes())
    variants = {row["correlation_id"]: row for row in rows.variants.to_pylist()}
    assert list(variants)[:3] == ["v-none", "v-one", "v-three"]
    assert variants["v-one"]["classification"] == "new"
    assert variants["v-none"]["quality"] is None
    three = variants["v-three"]
    assert [g["genotype"] for g in three["genotypes"]] == ["1|1", "./.", "."]
    assert three["gene"] == "TP53" and three["variant_class"] == "indel"
    assert variants["v-multi-digit"]["carriers"] == ["S1", "S2", "S3"]
    assert variants["v-carrier-edges"]["carriers"] == []
    assert variants["v-alt-minus-two"]["carriers"] == ["missing"]
    statuses = {row["analysis_id"]: row["status"] for row in rows.analyses.to_pylist()}
    assert statuses["v-three:local"] == "ok"
    assert statuses["v-one:late"] == "unspecified"
    for raw in rows.analyses["detail"].to_pylist():
        assert not analysis_pb2.AnalysisResult.FromString(raw).HasField("variant")


# --- randomized ---

_CODE_POINT_RANGES = (
    (0x20, 0x7E),
    (0x00, 0x1F),
    (0x80, 0x7FF),
    (0x800, 0xD7FF),
    (0xE000, 0xFFFF),
    (0x10000, 0x10FFFF),
)
_DOUBLES = (0.0, -0.0, 1.5, -2.25, 1e300, -1e-300, 5e-324, float("inf"), float("-inf"), float("nan"))


class RandomWrites:
    """DatabaseWrites with every field of the tree randomly present, for differential runs."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cids: list[str] = []
        self.providers = [self.text() for _ in range(4)]

    def chance(self, p: float = 0.7) -> bool:
        return self.rng.random() < p

    def text(self, max_len: int = 8) -> str:
        rng = self.rng
        length = rng.choice((0, 1, rng.randint(0, max_len)))
        chars = []
        for _ in range(length):
            low, high = rng.choices(_CODE_POINT_RANGES, weights=(8, 1, 2, 2, 1, 2))[0]
            chars.append(chr(rng.randint(low, high)))
        return "".join(chars)

    def texts(self, most: int = 3) -> list[str]:
        return [self.text() for _ in range(self.rng.randint(0, most))]

    def int32(self) -> int:
        rng = self.rng
        if self.chance(0.5):
            return rng.choice((0, 1, -1, 2, 9, 10, 127, 128, -129, 300, INT32_MIN, INT32_MAX))
        return rng.randint(INT32_MIN, INT32_MAX)

    def int64(self) -> int:
        rng = self.rng
        if self.chance(0.5):
            return rng.choice((0, 1, -1, 2**31, -(2**31) - 1, 2**32, INT64_MIN, INT64_MAX))
        return rng.randint(INT64_MIN, INT64_MAX)

    def double(self) -> float:
        return self.rng.choice(_DOUBLES) if self.chance(0.5) else self.rng.uniform(-1e6, 1e6)

    def timestamp(self, target: object) -> None:
        rng = self.rng
        seconds = rng.choice((TIMESTAMP_MIN, TIMESTAMP_MAX, 0, -1, rng.randint(TIMESTAMP_MIN, TIMESTAMP_MAX)))
        target.seconds = seconds
        target.nanos = rng.choice((0, 999, 1000, 999_999_999, rng.randint(0, 999_999_999)))

    def genotype(self) -> GenotypeCall:
        rng = self.rng
        return GenotypeCall(
            self.text() if self.chance() else "",
            tuple(
                rng.choice((-1, 0, 1, 2, 10, 123)) if self.chance(0.8) else self.int32()
                for _ in range(rng.randint(0, 4))
            ),
            self.chance(0.3),
            self.int32() if self.chance() else -1,
            self.int32() if self.chance() else -1,
            tuple(self.int32() for _ in range(rng.randint(0, 4))),
        )

    def variant(self, target: variant_pb2.VariantMessage) -> None:
        rng = self.rng
        for name in ("correlation_id", "job_id", "file_id", "tenant_id", "chromosome", "id", "reference"):
            if self.chance():
                setattr(target, name, self.text())
        for name in ("alternate", "source_name"):
            if self.chance():
                setattr(target, name, self.text())
        for name in ("record_index", "line_number", "position"):
            if self.chance():
                setattr(target, name, self.int64())
        if self.chance():
            target.alt_index = rng.choice((0, 1, 2, -1, -2)) if self.chance(0.8) else self.int32()
        target.all_alternates.extend(self.texts())
        target.has_quality = self.chance()
        if self.chance():
            target.quality = self.double()
        target.filters.extend(self.texts())
        for _ in range(rng.randint(0, 3)):
            value = target.info[self.text()]
            kind = rng.randint(0, 3)
            if kind == 0:
                value.flag = self.chance()
            elif kind == 1:
                value.ints.values.extend(self.int64() for _ in range(rng.randint(0, 3)))
            elif kind == 2:
                value.floats.values.extend(self.double() for _ in range(rng.randint(0, 3)))
            else:
                value.strings.values.extend(self.texts())
        calls = [self.genotype() for _ in range(rng.randint(0, 4))]
        # No samples: usually no columns, sometimes empty ones.
        if calls or self.chance(0.2):
            target.genotypes.CopyFrom(genotype_columns(calls))
        if self.chance():
            self.timestamp(target.timestamp)

    def result(self, target: analysis_pb2.AnalysisResult) -> None:
        rng = self.rng
        for name in (
            "correlation_id",
            "job_id",
            "tenant_id",
            "model",
            "classification",
            "rationale",
            "error",
        ):
            if self.chance(0.5):
                setattr(target, name, self.text())
        if self.chance(0.9):
            target.provider = rng.choice(self.providers)
        if self.chance(0.2):
            target.prompt_version = self.text()
        if self.chance():
            target.status = rng.choice((0, 1, 2, 3, 7, -3, INT32_MAX))
        for name in ("confidence", "latency_ms"):
            if self.chance(0.5):
                setattr(target, name, self.double())
        for name in ("input_tokens", "output_tokens"):
            if self.chance(0.3):
                setattr(target, name, self.int64())
        if self.chance(0.3):
            target.attempt = self.int32()
        target.criteria.extend(self.texts())
        target.requested_providers.extend(self.texts())
        if self.chance(0.6):
            annotation = target.annotation
            if self.chance():
                annotation.gene = self.text()
            if self.chance():
                annotation.variant_class = self.text()
            annotation.consequence = self.text()
            annotation.allele_count = self.int32()
            annotation.population_af = self.double()
            annotation.overlapping_genes.extend(self.texts())
            for _ in range(rng.randint(0, 2)):
                annotation.samples.add(sample=self.text(), zygosity=self.text(), allele_balance=self.double())
        if self.chance(0.3):
            self.variant(target.variant)
        if self.chance():
            self.timestamp(target.completed_at)

    def write(self) -> events_pb2.DatabaseWrite:
        rng = self.rng
        message = events_pb2.DatabaseWrite()
        if self.cids and self.chance(0.1):
            message.correlation_id = rng.choice(self.cids)
        elif self.chance(0.97):
            message.correlation_id = f"{len(self.cids)}-{self.text()}"
            self.cids.append(message.correlation_id)
        for name in ("job_id", "tenant_id", "classification", "priority_tier"):
            if self.chance():
                setattr(message, name, self.text())
        if self.chance(0.9):
            self.variant(message.variant)
        for _ in range(rng.randint(0, 3)):
            self.result(message.results.add())
        message.partial = self.chance(0.2)
        message.missing_providers.extend(self.texts())
        return message

    def marker(self) -> variant_pb2.JobMarker:
        marker = variant_pb2.JobMarker(
            kind=self.rng.randint(0, 3),
            job_id=self.text(),
            reason=self.text(),
            variant_count=self.int64(),
            samples=self.texts(),
        )
        if self.chance(0.5):
            self.timestamp(marker.timestamp)
        return marker


SEEDS = range(10)
WRITES_PER_SEED = 250


@pytest.mark.parametrize("seed", SEEDS)
def test_random_writes_match_the_reference(seed: int) -> None:
    source = RandomWrites(seed)
    writes = [source.write() for _ in range(WRITES_PER_SEED)]
    expected = reference_rows(writes)
    assert_rows_equal(build_rows(writes), expected)

    # Writes and markers interleaved on the wire, spread over 1-4 payloads.
    rng = source.rng
    cuts = sorted(rng.sample(range(1, WRITES_PER_SEED), rng.randint(0, 3)))
    payloads: list[bytes] = []
    for chunk in split(writes, cuts):
        fields = [lfield(1, item.SerializeToString()) for item in chunk]
        for _ in range(rng.randint(0, 2)):
            marker = source.marker()
            fields.insert(rng.randint(0, len(fields)), lfield(2, marker.SerializeToString()))
        payloads.append(b"".join(fields))
    sent_markers = [
        marker for payload in payloads for marker in events_pb2.DatabaseWriteBatch.FromString(payload).markers
    ]

    collector = RowCollector()
    markers: list[bytes] = []
    for payload in payloads:
        markers.extend(collector.add(payload))
    assert len(collector) == WRITES_PER_SEED
    assert_rows_equal(collector.take(), expected)
    assert len(collector) == 0
    assert_markers(markers, sent_markers)


def test_many_writes_over_many_payloads() -> None:
    """Thousands of ids, a third of them repeated, so id lookup and buffer growth are exercised."""
    rng = random.Random(99)
    writes = [
        write(
            f"cid-{rng.randrange(3000)}",
            calls=[
                call(f"S{i % 7}", [rng.randint(-1, 3), rng.randint(0, 3)]) for _ in range(rng.randint(0, 3))
            ],
            results=[result(f"p{rng.randrange(3)}", gene=f"G{i}") for _ in range(rng.randint(0, 3))],
            alt_index=rng.randint(0, 2),
        )
        for i in range(4000)
    ]
    rows, _ = collect([batch_payload(writes[start : start + 100]) for start in range(0, len(writes), 100)])
    assert_rows_equal(rows, reference_rows(writes))


def test_every_genotype_shape_becomes_the_call_rows_it_was() -> None:
    """GenotypeColumns of every call shape (phased and not, haploid, triploid, multi-allelic, `.`
    alleles, DP/GQ/AD missing, no GT, no samples) give the rows per-call messages gave."""
    calls = [
        call("S1", [0, 1], phased=True, depth=10, gq=99, allele_depths=[5, 5, 0]),
        call("S2", [1, 2], depth=-1, gq=-1),
        call("S3", [-1, -1], depth=3, gq=20, allele_depths=[1, -1, 0]),
        call("S4", [2, 2], phased=True, depth=7, gq=-1, allele_depths=[0, 0, 7]),
        call("S5", [1], depth=4, gq=-1),
        call("S6", [0, 1, 1], depth=9, gq=-1),
        call("S7", [-1], depth=-1, gq=-1),
        call("S8", [], depth=-1, gq=-1),
    ]
    missing = [call("A", [0, 0], depth=-1, gq=-1), call("B", [0, 1], depth=-1, gq=-1)]
    writes = [
        write("shapes", calls=calls, alt_index=1),
        write("no-samples"),
        write("all-missing", calls=missing),
    ]
    # Empty DP and GQ columns, no phased bitmap, no AD: the columns that hold nothing are left out.
    assert not writes[2].variant.genotypes.depth and not writes[2].variant.genotypes.phased
    rows, _ = collect([batch_payload(writes)])
    assert_rows_equal(rows, reference_rows(writes))
    table = rows.calls.to_pydict()
    assert table["genotype"] == ["0|1", "1/2", "./.", "2|2", "1", "0/1/1", ".", ".", "0/0", "0/1"]
    assert table["depth"] == [10, -1, 3, 7, 4, 9, -1, -1, -1, -1]
    assert table["genotype_quality"] == [99, -1, 20, -1, -1, -1, -1, -1, -1, -1]
    variants = rows.variants.to_pydict()
    assert [len(genotypes) for genotypes in variants["genotypes"]] == [8, 0, 2]
    assert [g["allele_depths"] for g in variants["genotypes"][0]][:4] == [
        [5, 5, 0],
        [],
        [1, -1, 0],
        [0, 0, 7],
    ]
    # Carriers of the write's ALT: allele 2 (alt_index 1) in the first, allele 1 in the last.
    assert variants["carriers"] == [["S2", "S4"], [], ["B"]]


def test_random_generator_covers_the_cases_it_claims() -> None:
    """The differential runs are only as good as what the generator produces."""
    source = RandomWrites(0)
    writes = [source.write() for _ in range(WRITES_PER_SEED)]
    cids = [w.correlation_id for w in writes]
    assert len(set(cids)) < len(cids)
    assert any(len({r.provider for r in w.results}) < len(w.results) for w in writes)
    assert any(r.HasField("variant") for w in writes for r in w.results)
    assert {r.status for w in writes for r in w.results} >= {0, 1, 2, 7, -3}
    calls = [genotype_calls(w.variant.genotypes) for w in writes]
    assert any(ord(ch) > 0xFFFF for variant_calls in calls for g in variant_calls for ch in g.sample)
    assert {len(variant_calls) for variant_calls in calls} == {0, 1, 2, 3, 4}
    assert any(w.variant.HasField("genotypes") and not w.variant.genotypes.samples for w in writes)
    flat = [g for variant_calls in calls for g in variant_calls]
    assert any(g.phased for g in flat) and any(not g.phased for g in flat)
    assert {g.depth for g in flat} > {-1} and any(len(g.allele_depths) > 1 for g in flat)
    assert any(not w.variant.has_quality for w in writes) and any(w.variant.has_quality for w in writes)


# --- wire-level edge cases ---


def _genotype(*fields: bytes) -> bytes:
    """VariantMessage.genotypes, a GenotypeColumns: samples 1, ploidy 2, alleles 3 (sint32), phased 4
    (bitmap), depth 5, genotype_quality 6 (sint32), allele_depth_counts 7, allele_depths 8 (sint32)."""
    return lfield(21, b"".join(fields))


def _variant(*fields: bytes) -> bytes:
    return lfield(4, b"".join(fields))


def _result(*fields: bytes) -> bytes:
    return lfield(5, b"".join(fields))


def _write(*fields: bytes) -> bytes:
    return lfield(1, b"".join(fields))


def _timestamp(field: int, seconds: int, nanos: int) -> bytes:
    return lfield(field, vfield(1, seconds) + vfield(2, nanos))


WIRE_CASES: dict[str, bytes] = {
    "repeated singular scalars: last wins": _write(
        sfield(1, "first"),
        sfield(2, "job-a"),
        sfield(1, "second"),
        vfield(8, 1),
        vfield(8, 0),
        sfield(6, "benign"),
        sfield(6, "pathogenic"),
        _variant(
            vfield(8, 10),
            vfield(8, 20),
            vfield(14, 1),
            dfield(15, 1.0),
            dfield(15, 2.5),
            sfield(7, "chr1"),
            sfield(7, "chrX"),
            vfield(12, 0),
            vfield(12, 1),
            _genotype(sfield(1, "a"), sfield(1, "b"), lfield(4, b"\x03"), lfield(4, b"\x02")),
        ),
        _result(sfield(4, "p"), vfield(6, 2), vfield(6, 1), sfield(5, "m1"), sfield(5, "m2"), dfield(8, 0.1)),
    ),
    "singular messages split: merged": _write(
        sfield(1, "split"),
        _variant(
            sfield(7, "chr1"),
            vfield(8, 5),
            _genotype(sfield(1, "s1"), lfield(2, varint(2)), lfield(3, zigzag(0) + zigzag(2))),
            _timestamp(19, 100, 0),
            vfield(14, 1),
        ),
        _result(
            sfield(4, "p"),
            lfield(11, sfield(10, "GENE1")),
            lfield(11, sfield(1, "snv")),
            lfield(16, sfield(7, "echo") + _genotype(sfield(1, "e1"))),
            lfield(16, _genotype(sfield(1, "e2"))),
            _timestamp(18, 200, 0),
            lfield(18, vfield(2, 5000)),
        ),
        _variant(
            sfield(7, "chr2"),
            _genotype(sfield(1, "s2"), vfield(2, 1), vfield(3, 4)),
            lfield(19, vfield(2, 7_000_999)),
        ),
        _variant(dfield(15, 9.5)),
    ),
    "genotype columns split inside one variant merge": _write(
        sfield(1, "two-pieces"),
        _variant(
            _genotype(sfield(1, "x"), lfield(2, varint(1))),
            vfield(12, 0),
            _genotype(sfield(1, "y"), vfield(2, 1), lfield(3, zigzag(1) + zigzag(0)), lfield(4, b"\x01")),
        ),
    ),
    "packed, unpacked and mixed repeated int32": _write(
        sfield(1, "packing"),
        _variant(
            _genotype(
                sfield(1, "unpacked"),
                sfield(1, "mixed"),
                sfield(1, "empty-packed"),
                vfield(2, 2),
                lfield(2, varint(4)),
                vfield(2, 0),
                lfield(2, b""),
                vfield(3, 0),
                vfield(3, 2),
                lfield(3, zigzag(1) + zigzag(2)),
                vfield(3, 6),
                lfield(3, b""),
                lfield(3, zigzag(-1)),
                lfield(7, varint(2)),
                vfield(7, 0),
                vfield(7, 3),
                vfield(8, 6),
                vfield(8, 8),
                lfield(8, zigzag(9) + zigzag(10)),
                vfield(8, 13),
                lfield(5, b""),
                lfield(6, b""),
            ),
        ),
    ),
    "known fields with the wrong wire type are skipped": _write(
        sfield(1, "wrong-types"),
        vfield(1, 5),
        f32field(2),
        vfield(4, 1),
        f64field(5),
        lfield(8, b"\x01"),
        vfield(9, 3),
        _variant(
            lfield(8, varint(99)),
            vfield(7, 1),
            vfield(14, 1),
            vfield(15, 7),
            f32field(18),
            vfield(19, 1),
            vfield(21, 1),
            _genotype(
                sfield(1, "g"), f64field(2), f32field(6), vfield(4, 5), f32field(3), vfield(1, 3), f64field(8)
            ),
        ),
        _result(sfield(4, "p"), lfield(6, b"\x01"), vfield(11, 1), vfield(16, 1), f32field(18), vfield(8, 1)),
        _result(sfield(4, "q"), f64field(16), lfield(18, vfield(1, 300)), vfield(18, 1)),
    ),
    "unknown fields of every wire type at every level": unknown_fields(3)
    + _write(
        unknown_fields(10),
        sfield(1, "unknowns"),
        _variant(
            unknown_fields(22),
            vfield(8, 42),
            _genotype(unknown_fields(9), sfield(1, "u"), vfield(2, 1), vfield(3, 2)),
            lfield(19, unknown_fields(3) + vfield(1, 50)),
            lfield(17, sfield(1, "K") + lfield(2, unknown_fields(5) + vfield(1, 1)) + unknown_fields(3)),
        ),
        _result(
            unknown_fields(21),
            sfield(4, "p"),
            lfield(11, unknown_fields(40) + sfield(10, "G")),  # LocalAnnotation ends at field 26
            lfield(18, unknown_fields(3) + vfield(1, 60)),
            lfield(16, unknown_fields(21)),
        ),
        unknown_fields(536_870_908),
    )
    + lfield(2, unknown_fields(13) + sfield(2, "job"))
    + unknown_fields(100),
    "varints: overlong, 10-byte negative, 64-bit into int32 and bool": _write(
        key(1, 2) + b"\x82\x80\x00" + b"ab",
        vfield(8, 2**40),
        _variant(
            key(8, 0) + b"\x80\x80\x80\x00",
            vfield(12, INT32_MAX),
            vfield(14, 2),
            # sint32 and uint32 keep a varint's low 32 bits; zigzag 2**32 - 1 is INT32_MIN.
            _genotype(
                sfield(1, "v"),
                sfield(1, "w"),
                lfield(2, varint(2**32 + 3) + b"\x81\x00"),
                lfield(3, varint(2**32 + 2) + varint(2**32 - 1) + b"\x80\x00" + varint(2**32 - 1)),
                vfield(5, 2**32 + 14),
                key(5, 0) + b"\xff" * 9 + b"\x01",
                key(6, 0) + b"\x81\x80\x80\x00",
                vfield(6, 2**33),
                lfield(7, varint(2**32 + 1) + varint(0)),
                vfield(8, 9),
            ),
            lfield(19, vfield(1, -1) + vfield(2, 1)),
        ),
    ),
    "status numbers outside the enum": _write(
        sfield(1, "statuses"),
        _result(sfield(4, "a"), vfield(6, 7)),
        _result(sfield(4, "b"), vfield(6, -1)),
        _result(sfield(4, "c"), vfield(6, 2**32 + 1)),
        _result(sfield(4, "d"), vfield(6, 2)),
    ),
    "negative nanos floor to the microsecond below": _write(
        sfield(1, "nanos"),
        _variant(lfield(19, vfield(1, 10) + vfield(2, -1500))),
        _result(sfield(4, "p"), lfield(18, vfield(1, 10) + vfield(2, 1_999_999_999))),
    ),
    "empty writes and empty messages": _write()
    + _write(sfield(1, "empties"), _variant(), _result(), lfield(11, b""))
    + lfield(2, b""),
    "writes and markers interleaved": lfield(2, sfield(2, "m1"))
    + _write(sfield(1, "w1"))
    + lfield(2, sfield(2, "m2") + vfield(1, 2))
    + _write(sfield(1, "w2"))
    + _write(sfield(1, "w1"), sfield(6, "again")),
    "empty payload": b"",
    "tags and lengths as long as upb allows (5 bytes)": b"\x8a\x80\x80\x80\x00\x00"
    + _write(b"\x8a\x80\x80\x80\x00" + b"\x81\x80\x80\x80\x00" + b"x")
    + b"\xf8\xff\xff\xff\x0f\x00",
    "10-byte varints whose last byte carries bits past 64": _write(
        sfield(1, "long-varints"),
        vfield(8, 0) + key(8, 0) + b"\xff" * 9 + b"\x7f",
        _variant(_genotype(sfield(1, "s"), key(5, 0) + b"\xfe" + b"\xff" * 8 + b"\x02")),
    ),
    "map keys repeated, entries without key or value": _write(
        sfield(1, "maps"),
        _variant(
            lfield(17, sfield(1, "K")), lfield(17, sfield(1, "K") + lfield(2, vfield(1, 1))), lfield(17, b"")
        ),
    ),
    "bytes that are not UTF-8 where no string is read": _write(
        sfield(1, "not-strings"),
        lfield(99, sfield(1, "") + lfield(1, b"\xff")),
        f32field(1, b"\xff\xff\xff\xff"),
        _result(sfield(4, "p"), vfield(10, 1), lfield(99, b"\xc0\x80")),
    ),
    "packed doubles and int64s in info values": _write(
        sfield(1, "info"),
        _variant(
            lfield(17, sfield(1, "F") + lfield(2, lfield(3, lfield(1, b"\x00" * 16)))),
            lfield(
                17, sfield(1, "I") + lfield(2, lfield(2, lfield(1, varint(-1) + varint(5)) + vfield(1, 7)))
            ),
        ),
    ),
    "nanos at the int32 limits": _write(
        sfield(1, "nanos-limits"),
        _variant(lfield(19, vfield(2, INT32_MIN))),
        _result(sfield(4, "p"), lfield(18, vfield(1, -5) + vfield(2, INT32_MAX))),
    ),
}


@pytest.mark.parametrize("payload", WIRE_CASES.values(), ids=WIRE_CASES.keys())
def test_wire_edge_cases_match_upb(payload: bytes) -> None:
    assert_like_upb([payload])


def test_wire_edge_cases_all_in_one_collector() -> None:
    assert_like_upb(list(WIRE_CASES.values()))


def test_wire_cases_mean_what_their_names_say() -> None:
    """upb's reading of the hand-encoded bytes, so a typo in a case cannot hide its point."""

    def only(case: str) -> events_pb2.DatabaseWrite:
        return events_pb2.DatabaseWriteBatch.FromString(WIRE_CASES[case]).writes[0]

    scalars = only("repeated singular scalars: last wins")
    assert (scalars.correlation_id, scalars.variant.position, scalars.results[0].status) == ("second", 20, 1)
    merged = only("singular messages split: merged")
    assert genotype_calls(merged.variant.genotypes) == [
        GenotypeCall("s1", (0, 2)),
        GenotypeCall("s2", (2,)),
    ]
    assert (merged.variant.chromosome, merged.variant.position, merged.variant.timestamp.nanos) == (
        "chr2",
        5,
        7_000_999,
    )
    assert (merged.results[0].annotation.gene, merged.results[0].annotation.variant_class) == ("GENE1", "snv")
    assert list(merged.results[0].variant.genotypes.samples) == ["e1", "e2"]
    scalars_calls = genotype_calls(scalars.variant.genotypes)
    assert [(g.sample, g.phased) for g in scalars_calls] == [("a", False), ("b", True)]
    pieces = only("genotype columns split inside one variant merge")
    assert genotype_calls(pieces.variant.genotypes) == [
        GenotypeCall("x", (1,), phased=True),
        GenotypeCall("y", (0,)),
    ]
    packing = only("packed, unpacked and mixed repeated int32")
    assert genotype_calls(packing.variant.genotypes) == [
        GenotypeCall("unpacked", (0, 1), allele_depths=(3, 4)),
        GenotypeCall("mixed", (1, 2, 3, -1)),
        GenotypeCall("empty-packed", (), allele_depths=(9, 10, -7)),
    ]
    wrong = only("known fields with the wrong wire type are skipped")
    assert wrong.correlation_id == "wrong-types" and not wrong.results[0].HasField("completed_at")
    assert wrong.results[1].completed_at.seconds == 300 and not wrong.variant.HasField("timestamp")
    varints = only("varints: overlong, 10-byte negative, 64-bit into int32 and bool")
    assert genotype_calls(varints.variant.genotypes) == [
        GenotypeCall("v", (1, INT32_MIN, 0), False, 7, -1, (-5,)),
        GenotypeCall("w", (INT32_MIN,), False, INT32_MIN, 0, ()),
    ]
    wrong_calls = genotype_calls(wrong.variant.genotypes)
    assert wrong_calls == [GenotypeCall("g")]


# --- corrupt payloads ---


def _small_batch() -> tuple[list[events_pb2.DatabaseWrite], list[variant_pb2.JobMarker]]:
    writes = [
        write(
            "a",
            calls=[call("S1", [0, 1], depth=3, allele_depths=[1, 2]), call("S2", [-1])],
            results=[result("p", gene="G", with_variant=True, completed=(5, 6))],
        ),
        write("b", quality=None),
    ]
    return writes, [variant_pb2.JobMarker(kind=2, job_id="job-1", reason="ok", samples=["S1"])]


def _good() -> tuple[bytes, WriteRows, list[events_pb2.DatabaseWrite]]:
    writes = [write("good-1", calls=[call("G", [1, 1])], results=[result("p")]), write("good-2")]
    return batch_payload(writes), reference_rows(writes), writes


def assert_rejected(bad: bytes) -> PayloadError:
    """The payload raises PayloadError and the collector keeps exactly what it held before."""
    good, expected, good_writes = _good()
    collector = RowCollector()
    assert collector.add(good) == []
    with pytest.raises(PayloadError) as caught:
        collector.add(bad)
    assert str(caught.value), "PayloadError should say what was wrong"
    assert len(collector) == len(good_writes)
    assert_rows_equal(collector.take(), expected)
    return caught.value


def _upb_rejects(payload: bytes) -> bool:
    try:
        events_pb2.DatabaseWriteBatch.FromString(payload)
    except DecodeError:
        return True
    return False


def test_every_truncation_agrees_with_upb() -> None:
    writes, markers = _small_batch()
    full = batch_payload(writes, markers)
    good, _, good_writes = _good()
    rejected = 0
    for length in range(len(full)):
        cut = full[:length]
        if _upb_rejects(cut):
            rejected += 1
            assert_rejected(cut)
            continue
        collector = RowCollector()
        collector.add(good)
        parsed = events_pb2.DatabaseWriteBatch.FromString(cut)
        assert_markers(collector.add(cut), parsed.markers)
        assert len(collector) == len(good_writes) + len(parsed.writes), f"truncated at {length}"
        assert_rows_equal(collector.take(), reference_rows([*good_writes, *parsed.writes]))
    assert rejected > len(full) // 2


def _string_paths(
    descriptor: Descriptor, prefix: tuple[FieldDescriptor, ...] = ()
) -> Iterator[tuple[FieldDescriptor, ...]]:
    for field in descriptor.fields:
        path = (*prefix, field)
        if field.type == FieldDescriptor.TYPE_STRING:
            yield path
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type not in [
            f.message_type for f in prefix
        ]:
            yield from _string_paths(field.message_type, path)


STRING_PATHS = {
    ".".join(field.name for field in path): path
    for path in _string_paths(events_pb2.DatabaseWriteBatch.DESCRIPTOR)
}


def _nest(path: Sequence[FieldDescriptor], leaf: bytes) -> bytes:
    data = lfield(path[-1].number, leaf)
    for field in reversed(path[:-1]):
        data = lfield(field.number, data)
    return data


def test_string_paths_reach_every_corner() -> None:
    assert len(STRING_PATHS) > 60
    for name in (
        "markers.reason",
        "writes.results.rationale",
        "writes.variant.info.key",
        "writes.variant.info.value.strings.values",
        "writes.results.variant.genotypes.samples",
        "writes.results.annotation.samples.zygosity",
        "writes.missing_providers",
    ):
        assert name in STRING_PATHS


@pytest.mark.parametrize("path", STRING_PATHS.values(), ids=STRING_PATHS.keys())
def test_invalid_utf8_in_any_string_is_rejected(path: tuple[FieldDescriptor, ...]) -> None:
    writes, markers = _small_batch()
    # Valid writes first, so a collector that appends as it parses would be caught.
    bad = batch_payload(writes, markers) + _nest(path, b"ok\xff")
    assert _upb_rejects(bad)
    error = assert_rejected(bad)
    # The message names the field, so a dead letter says where the bad text was.
    field = path[-1]
    assert f"invalid UTF-8 in field {field.number} of {field.containing_type.full_name}" in str(error)


# Overlong, surrogate, beyond U+10FFFF, truncated, stray continuation, 5-byte form.
BAD_UTF8 = (
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xc1\xbf",
)
GOOD_UTF8 = (
    b"\x00",
    b"\x7f",
    b"\xc2\x80",
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xed\x9f\xbf",
)


@pytest.mark.parametrize("raw", BAD_UTF8, ids=[raw.hex() for raw in BAD_UTF8])
def test_each_kind_of_bad_utf8_is_rejected(raw: bytes) -> None:
    for name in ("writes.correlation_id", "writes.variant.genotypes.samples", "writes.results.rationale"):
        bad = _nest(STRING_PATHS[name], b"x" + raw + b"y")
        assert _upb_rejects(bad)
        assert_rejected(bad)


@pytest.mark.parametrize("raw", GOOD_UTF8, ids=[raw.hex() for raw in GOOD_UTF8])
def test_boundary_utf8_is_accepted(raw: bytes) -> None:
    text = b"x" + raw + b"y"
    assert_like_upb(
        [
            _write(
                lfield(1, text),
                _variant(_genotype(lfield(1, text), vfield(2, 1), vfield(3, 2)), lfield(17, lfield(1, text))),
                _result(lfield(4, text), lfield(10, text), lfield(11, lfield(10, text))),
            )
            + lfield(2, lfield(10, text))
        ]
    )


# Valid bytes after a broken submessage, so only the submessage's own bounds can catch it.
PAD = _write(sfield(1, "p" * 40))

CORRUPT: dict[str, bytes] = {
    "length past the end": key(1, 2) + varint(50) + b"short",
    "nested length past its parent": _write(key(1, 2) + varint(20) + b"abc") + PAD,
    "packed alleles past the genotype": _write(_variant(key(21, 2) + b"\x03" + key(3, 2) + b"\x05\x01"))
    + PAD,
    "huge length": key(1, 2) + varint(2**63) + b"abc",
    "length with all 64 bits": key(1, 2) + varint(-1) + b"abc",
    "varint with 11 bytes": key(8, 0) + b"\xff" * 10 + b"\x01",
    "nested varint with 11 bytes": _write(key(8, 0) + b"\xff" * 10 + b"\x01"),
    "truncated varint at the end": _write(sfield(1, "x")) + key(8, 0) + b"\xff\xff",
    "truncated packed varint": _write(_variant(_genotype(lfield(2, b"\x01\x80")))) + PAD,
    "truncated fixed64": _write(_variant(key(15, 1) + b"\x00\x00")) + PAD,
    "truncated fixed32 in a submessage": _write(_variant(f32field(99, b"\x01\x02"))) + PAD,
    "truncated key": b"\x80",
    "field number 0": _write(sfield(1, "x")) + vfield(0, 1),
    "field number 0, nested": _write(_variant(lfield(0, b""))),
    "field number 0, length-delimited at the top": lfield(0, b"ab"),
    "field number too large": varint(2**29 << 3) + b"\x00",
    "wire type 7": _write(sfield(1, "x")) + key(5, 7),
    "wire type 7, nested": _write(_result(key(4, 7))),
    "wire type 6": key(1, 6) + b"\x00",
    "wire type 6, nested": _write(_variant(_genotype(key(40, 6)))),
    "end group without a start": key(1, 4),
    "end group nested": _write(_variant(key(18, 4))),
    "start group never ended": _write(sfield(1, "x")) + key(1, 3),
    "mismatched group end": key(9, 3) + key(10, 4),
    "tag past 32 bits": b"\x88\x80\x80\x80\x10\x00",
    "packed doubles not a multiple of 8": _write(
        _variant(lfield(17, sfield(1, "K") + lfield(2, lfield(3, lfield(1, b"\x00" * 7)))))
    ),
    "packed int64 cut inside a varint": _write(
        _variant(lfield(17, sfield(1, "K") + lfield(2, lfield(2, lfield(1, b"\x01\x80")))))
    ),
}


@pytest.mark.parametrize("bad", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_payloads_are_rejected(bad: bytes) -> None:
    assert _upb_rejects(bad)
    assert_rejected(bad)


# upb skips well-formed groups as unknown fields; the collector's contract rejects them,
# as no proto3 producer emits groups.
GROUPS: dict[str, bytes] = {
    "top level": key(99, 3) + vfield(1, 1) + key(99, 4),
    "on a known field number": key(1, 3) + key(1, 4),
    "inside a write": _write(sfield(1, "g"), key(50, 3), key(50, 4)),
    "inside an annotation": _write(_result(lfield(11, key(50, 3) + key(50, 4)))),
    "inside a marker": lfield(2, key(20, 3) + key(20, 4)),
}


@pytest.mark.parametrize("bad", GROUPS.values(), ids=GROUPS.keys())
def test_group_wire_types_are_rejected(bad: bytes) -> None:
    assert not _upb_rejects(bad)
    assert_rejected(bad)


def test_rejection_after_several_adds_keeps_all_earlier_ones() -> None:
    good, _, good_writes = _good()
    writes, markers = _small_batch()
    collector = RowCollector()
    collector.add(good)
    assert_markers(collector.add(batch_payload(writes, markers)), markers)
    with pytest.raises(PayloadError):
        collector.add(batch_payload(writes) + key(1, 7))
    with pytest.raises(PayloadError):
        collector.add(_nest(STRING_PATHS["markers.reason"], b"\xff"))
    assert len(collector) == len(good_writes) + len(writes)
    assert_rows_equal(collector.take(), reference_rows([*good_writes, *writes]))


# --- varint limits and timestamps out of range ---

# upb reads a tag or a length as at most 5 bytes; longer (overlong) encodings are corrupt.
OVERLONG: dict[str, bytes] = {
    "6-byte tag": b"\x8a\x80\x80\x80\x80\x00\x00",
    "10-byte tag inside a write": _write(b"\x8a" + b"\x80" * 8 + b"\x00" + b"\x01x"),
    "6-byte string length": _write(b"\x0a\x81\x80\x80\x80\x80\x00x"),
    "6-byte write length": b"\x0a\x83\x80\x80\x80\x80\x00" + sfield(1, "x"),
}


@pytest.mark.parametrize("bad", OVERLONG.values(), ids=OVERLONG.keys())
def test_upb_rejects_tags_and_lengths_past_5_bytes(bad: bytes) -> None:
    assert _upb_rejects(bad)


@pytest.mark.parametrize("bad", OVERLONG.values(), ids=OVERLONG.keys())
def test_tags_and_lengths_past_5_bytes_are_rejected(bad: bytes) -> None:
    assert_rejected(bad)


# Timestamps whose microseconds leave int64 but never become updated_at: the reference
# builds these rows, so the payload is valid.
UNUSED_HUGE_TIMESTAMPS: dict[str, bytes] = {
    "variant timestamp far below the completion": _write(
        sfield(1, "a"), _variant(_timestamp(19, -(2**62), 0)), _result(sfield(4, "p"), _timestamp(18, 100, 0))
    ),
    "superseded answer of a provider": _write(
        sfield(1, "a"),
        _result(sfield(4, "p"), _timestamp(18, 2**62, 0)),
        _result(sfield(4, "p"), _timestamp(18, 100, 0)),
    ),
}

# A write whose own updated_at leaves int64 is refused with its payload, even when a later
# duplicate would have replaced it: the builder checks each write as it arrives.
SUPERSEDED_HUGE_WRITE = _write(sfield(1, "a"), _variant(_timestamp(19, 2**62, 0))) + _write(sfield(1, "a"))


@pytest.mark.parametrize("payload", UNUSED_HUGE_TIMESTAMPS.values(), ids=UNUSED_HUGE_TIMESTAMPS.keys())
def test_reference_builds_rows_for_unused_huge_timestamps(payload: bytes) -> None:
    batch = events_pb2.DatabaseWriteBatch.FromString(payload)
    assert reference_rows(batch.writes).variants["updated_at"].cast(pa.int64()).to_pylist()[0] >= 0


@pytest.mark.parametrize("payload", UNUSED_HUGE_TIMESTAMPS.values(), ids=UNUSED_HUGE_TIMESTAMPS.keys())
def test_unused_huge_timestamps_are_accepted(payload: bytes) -> None:
    assert_like_upb([payload])


def test_an_updated_at_outside_int64_is_rejected() -> None:
    """The reference cannot build this row at all; refusing the payload beats failing the whole take()."""
    payload = _write(sfield(1, "a"), _variant(_timestamp(19, 2**62, 0)))
    with pytest.raises(OverflowError):
        reference_rows(events_pb2.DatabaseWriteBatch.FromString(payload).writes)
    assert_rejected(payload)


def test_a_write_out_of_range_is_refused_even_when_a_duplicate_replaces_it() -> None:
    assert _own_updated_overflows(events_pb2.DatabaseWriteBatch.FromString(SUPERSEDED_HUGE_WRITE))
    assert_rejected(SUPERSEDED_HUGE_WRITE)


def test_a_write_whose_genotype_columns_disagree_is_refused_with_its_payload() -> None:
    """GenotypeColumns holds one entry per sample in each column: a write with two depths for one
    sample is refused, and the writes read before it in its payload go with it. The calls of the
    writes around the refused payload come back whole: the compiled builder keeps every write's
    calls in column arenas shared by the batch, each write reading its own stretch of them."""
    before = write("before", calls=[call("S1", [0, 1], depth=3), call("S2", [1, 1], depth=4)])
    first = write("first", calls=[call("S1", [1, 0], depth=5, allele_depths=[2, 3])])
    bad = write("bad", calls=[call("S1", [0, 1], depth=6)])
    bad.variant.genotypes.depth.append(7)
    after = write("after", calls=[call("S3", [0, 0], phased=True, depth=8), call("S4", [-1], depth=9)])
    collector = RowCollector()
    collector.add(batch_payload([before]))
    with pytest.raises(PayloadError, match=r"GenotypeColumns\.depth has 2 entries for 1 samples"):
        collector.add(batch_payload([first, bad]))
    collector.add(batch_payload([after]))
    assert len(collector) == 2
    assert_rows_equal(collector.take(), reference_rows([before, after]))


# --- mutation fuzzing ---

FUZZ_MUTANTS = 3000


def _mutant(rng: random.Random, data: bytes) -> bytes:
    """A few random byte edits: most make the payload corrupt, some keep it valid but different."""
    mutant = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(mutant))
        edit = rng.randint(0, 4)
        if edit == 0:
            mutant[at] ^= 1 << rng.randint(0, 7)
        elif edit == 1:
            mutant[at] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randint(0, 255)))
        elif edit == 2:
            mutant.insert(at, rng.randint(0, 255))
        elif edit == 3:
            del mutant[at]
        else:
            start = rng.randrange(len(mutant))
            mutant[at:at] = mutant[start : start + rng.randint(1, 8)]
    return bytes(mutant)


def _own_columns_disagree(batch: events_pb2.DatabaseWriteBatch) -> bool:
    """Whether some write's genotype columns disagree (the collector refuses the payload, even when
    a later duplicate replaces that write)."""
    for write in batch.writes:
        try:
            genotype_calls(write.variant.genotypes)
        except ValueError:
            return True
    return False


def _own_updated_overflows(batch: events_pb2.DatabaseWriteBatch) -> bool:
    """Whether some write, taken alone, has an updated_at no row can hold (the collector refuses those)."""
    for write in batch.writes:
        try:
            reference_rows([write])
        except OverflowError:
            return True
    return False


def test_mutated_payloads_agree_with_upb() -> None:
    failures: list[str] = []
    compared = 0
    for seed in range(FUZZ_MUTANTS):
        rng = random.Random(seed)
        source = RandomWrites(seed)
        payload = batch_payload([source.write() for _ in range(rng.randint(1, 2))], [source.marker()])
        mutant = _mutant(rng, payload)
        batch: events_pb2.DatabaseWriteBatch | None = None
        expected: WriteRows | None = None
        try:
            batch = events_pb2.DatabaseWriteBatch.FromString(mutant)
            expected = reference_rows(batch.writes)
        except DecodeError:
            pass
        except OverflowError:
            pass  # no row can hold this updated_at: the collector must refuse the payload
        collector = RowCollector()
        try:
            markers = collector.add(mutant)
        except PayloadError as exc:
            if expected is not None:
                assert batch is not None
                if not _own_columns_disagree(batch) and not _own_updated_overflows(batch):
                    failures.append(f"seed {seed}: rejected ({exc}), the reference accepts {mutant.hex()}")
            continue
        if expected is None or batch is None:
            failures.append(f"seed {seed}: accepted, but upb or the reference rejects {mutant.hex()}")
            continue
        try:
            assert_markers(markers, batch.markers)
            assert_rows_equal(collector.take(), expected)
        except (AssertionError, pytest.fail.Exception) as exc:
            failures.append(f"seed {seed}: {exc} for {mutant.hex()}")
        compared += 1
    assert not failures, "\n".join(failures[:10])
    assert compared > FUZZ_MUTANTS // 20, "too few mutants stayed valid to compare rows"


# --- markers and the empty collector ---


def test_markers_come_back_in_order_with_their_content() -> None:
    writes, _ = _small_batch()
    markers = [
        variant_pb2.JobMarker(kind=1, job_id="j", file_id="f", tenant_id="t", source_name="s.vcf"),
        variant_pb2.JobMarker(
            kind=2,
            job_id="j",
            variant_count=INT64_MAX,
            record_count=-1,
            samples=["S1", "Š2"],
            providers=["local", "gpt"],
            dead_lettered=3,
        ),
        variant_pb2.JobMarker(kind=3, reason="bröken 😀"),
        variant_pb2.JobMarker(),
    ]
    markers[1].timestamp.seconds = 1_700_000_000
    payload = (
        lfield(2, markers[0].SerializeToString())
        + lfield(1, writes[0].SerializeToString())
        + lfield(2, markers[1].SerializeToString())
        + lfield(2, markers[2].SerializeToString())
        + lfield(1, writes[1].SerializeToString())
        + lfield(2, markers[3].SerializeToString())
    )
    collector = RowCollector()
    returned = collector.add(payload)
    assert_markers(returned, markers)
    assert len(collector) == 2
    assert collector.add(batch_payload(writes)) == []
    assert collector.add(batch_payload([], markers[2:3])) == [markers[2].SerializeToString()]
    assert_rows_equal(collector.take(), reference_rows([*writes, *writes]))


def _assert_empty(rows: WriteRows) -> None:
    for table, schema in (
        (rows.variants, VARIANT_SCHEMA),
        (rows.analyses, ANALYSIS_SCHEMA),
        (rows.calls, CALL_SCHEMA),
    ):
        assert table.num_rows == 0
        assert table.schema.equals(schema)
    assert len(rows) == 0


def test_empty_collector_takes_empty_tables() -> None:
    collector = RowCollector()
    assert len(collector) == 0
    _assert_empty(collector.take())
    _assert_empty(build_rows([]))
    assert_rows_equal(collector.take(), reference_rows([]))


def test_take_empties_the_collector() -> None:
    good, expected, good_writes = _good()
    collector = RowCollector()
    collector.add(good)
    collector.add(good)
    assert len(collector) == 2 * len(good_writes)
    assert_rows_equal(collector.take(), expected)
    assert len(collector) == 0
    _assert_empty(collector.take())
    collector.add(good)
    assert_rows_equal(collector.take(), expected)
