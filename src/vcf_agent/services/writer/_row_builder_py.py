"""The pure-Python twin of the compiled row builder (_row_builder.c): the same column buffers from
DatabaseWriteBatch payloads, read through protobuf instead of straight from the wire bytes.

Used when the extension was not built or VCF_AGENT_NO_EXTENSIONS=1 (see vcf_agent.compiled). It
takes the same arguments and returns the same buffers, so _rows.py wraps either as Arrow arrays;
tests/writer/test_row_builder.py holds both to the reference rows. upb checks the wire bytes;
a walk along the schema then refuses what the compiled builder's contract refuses beyond upb
(groups) and names the field of a bad string, as the compiled builder's errors do.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from vcf_agent.schema import GenotypeCall, genotype_calls, read_varint
from vcf_agent.v1 import analysis_pb2, events_pb2
from vcf_agent.v1 import wire_numbers as wire

# (full name, fields), a field being (number, WIRE_CHECK kind, repeated, child message or -1).
Schema = tuple[tuple[str, tuple[tuple[int, int, bool, int], ...]], ...]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MAX = 2**31 - 1


def _wire_problem(data: bytes, schema: Schema, message: int = 0, depth: int = 0) -> str | None:
    """The first thing the compiled builder's wire check refuses in `data`, walking the known
    message fields as it does: a group, or a string that is not UTF-8; None when there is none."""
    if depth > 64:
        return "messages nested too deeply"
    name, fields = schema[message]
    specs = {number: (kind, child) for number, kind, _, child in fields}
    pos, end = 0, len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = read_varint(data, pos)
            body, pos = data[pos : pos + size], pos + size
            kind, child = specs.get(number, (wire.WIRE_CHECK_BYTES, -1))
            if kind == wire.WIRE_CHECK_STRING:
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    return f"invalid UTF-8 in field {number} of {name}"
            elif kind == wire.WIRE_CHECK_MESSAGE:
                problem = _wire_problem(body, schema, child, depth + 1)
                if problem:
                    return problem
        elif wire_type in (3, 4):
            return "group wire types are not used by this schema"
        else:
            return "invalid wire type"
    return None


def _micros(seconds: int, nanos: int) -> tuple[int, bool]:
    """A timestamp in microseconds and whether it overflowed int64 (then saturated), as the C does."""
    scaled = seconds * 1_000_000
    total = scaled + nanos // 1000
    if not _INT64_MIN <= scaled <= _INT64_MAX or not _INT64_MIN <= total <= _INT64_MAX:
        return (_INT64_MIN if seconds < 0 else _INT64_MAX), True
    return total, False


def _later(a: tuple[int, bool], b: tuple[int, bool]) -> bool:
    # On a saturated tie the overflowed value is the larger one.
    return a[0] > b[0] or (a[0] == b[0] and a[1] and not b[1] and a[0] > 0)


def _kept_results(write: events_pb2.DatabaseWrite) -> list[analysis_pb2.AnalysisResult]:
    """The last answer of each provider, in the order the providers were first seen."""
    kept: dict[str, analysis_pb2.AnalysisResult] = {}
    for result in write.results:
        kept[result.provider] = result
    return list(kept.values())


def _updated(write: events_pb2.DatabaseWrite) -> tuple[int, bool]:
    """updated_at: the latest of the variant's timestamp and its kept answers' completion."""
    stamp = write.variant.timestamp
    latest = _micros(stamp.seconds, stamp.nanos)
    for result in _kept_results(write):
        done = _micros(result.completed_at.seconds, result.completed_at.nanos)
        if _later(done, latest):
            latest = done
    return latest


class _Text:
    """An Arrow string (or binary) column: int32 offsets and the bytes."""

    __slots__ = ("data", "offsets")

    def __init__(self) -> None:
        self.offsets = array("i", [0])
        self.data = bytearray()

    def add(self, value: str | bytes) -> None:
        self.data += value.encode() if isinstance(value, str) else value
        if len(self.data) > _INT32_MAX:
            raise OverflowError("a column of this batch exceeds 2 GiB")
        self.offsets.append(len(self.data))

    def buffers(self) -> tuple[bytes, bytes]:
        return self.offsets.tobytes(), bytes(self.data)


def _bitmap(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            out[index // 8] |= 1 << (index % 8)
    return bytes(out)


def _genotype(alleles: tuple[int, ...], phased: bool) -> str:
    if not alleles:
        return "."
    return ("|" if phased else "/").join("." if allele < 0 else str(allele) for allele in alleles)


@dataclass
class _Columns:
    texts: dict[str, _Text] = field(default_factory=dict)
    values: dict[str, array[Any]] = field(default_factory=dict)
    bits: dict[str, list[bool]] = field(default_factory=dict)

    def text(self, name: str) -> _Text:
        return self.texts.setdefault(name, _Text())

    def value(self, name: str, kind: str) -> array[Any]:
        return self.values.setdefault(name, array(kind))


_TEXT_COLUMNS = (
    "correlation_id",
    "job_id",
    "tenant_id",
    "file_id",
    "source_name",
    "chromosome",
    "reference",
    "alternate",
    "variant_id",
    "classification",
    "priority_tier",
    "gene",
    "variant_class",
    "filters",
    "missing_providers",
    "carriers",
    "call.sample",
    "call.genotype",
    "analysis.analysis_id",
    "analysis.correlation_id",
    "analysis.job_id",
    "analysis.tenant_id",
    "analysis.provider",
    "analysis.model",
    "analysis.status",
    "analysis.classification",
    "analysis.error",
    "analysis.detail",
    "analysis.file_id",
)
# (name, array type code) of the fixed-width columns.
_VALUE_COLUMNS = (
    ("record_index", "q"),
    ("position", "q"),
    ("alt_index", "i"),
    ("quality", "d"),
    ("updated_at", "q"),
    ("call.depth", "i"),
    ("call.genotype_quality", "i"),
    ("call.allele_depths", "i"),
    ("analysis.confidence", "d"),
    ("analysis.record_index", "q"),
)
_OFFSET_COLUMNS = (
    "filters.offsets",
    "missing_providers.offsets",
    "genotypes.offsets",
    "carriers.offsets",
    "call.allele_depths.offsets",
)


class Collector:
    """DatabaseWriteBatch payloads collected for one store batch (the compiled Collector's twin)."""

    def __init__(
        self,
        schema: Schema,
        status_names: tuple[str, ...],
        unknown_status: str,
    ) -> None:
        self._schema = schema
        self._statuses = status_names
        self._unknown = unknown_status
        # Each write with its calls, read from its GenotypeColumns when it arrived.
        self._writes: list[tuple[events_pb2.DatabaseWrite, list[GenotypeCall]]] = []

    def __len__(self) -> int:
        return len(self._writes)

    def add(self, payload: bytes, /) -> list[bytes]:
        """Check and keep one serialized DatabaseWriteBatch; returns its serialized JobMarkers.

        ValueError for a payload protobuf rejects or whose updated_at no Arrow timestamp holds;
        nothing of a rejected payload is kept.
        """
        if not isinstance(payload, bytes):
            raise TypeError("payload must be bytes")
        try:
            batch = events_pb2.DatabaseWriteBatch.FromString(payload)
        except DecodeError as exc:
            raise ValueError(self._problem(payload) or str(exc)) from exc
        problem = self._problem(payload)
        if problem:
            raise ValueError(problem)
        writes = []
        for write in batch.writes:
            # Columns that disagree (a call per sample, alleles per ploidy) refuse the payload.
            writes.append((write, genotype_calls(write.variant.genotypes)))
            if _updated(write)[1]:
                raise ValueError(
                    "updated_at (the latest timestamp of a write) is out of the int64 microsecond range"
                )
        self._writes.extend(writes)
        return [marker.SerializeToString() for marker in batch.markers]

    def _problem(self, payload: bytes) -> str | None:
        try:
            return _wire_problem(payload, self._schema)
        except IndexError:
            return None  # truncated: upb's own error says so

    def take(self) -> dict[str, Any]:
        """Column buffers of everything collected, as the compiled take() returns them; then empty."""
        # The last write per correlation id, where the first one stood.
        unique = {write.correlation_id: (write, calls) for write, calls in self._writes}
        order = list(dict.fromkeys(write.correlation_id for write, _ in self._writes))
        out = _Columns()
        for name in _TEXT_COLUMNS:
            out.text(name)
        for name, kind in _VALUE_COLUMNS:
            out.value(name, kind)
        offsets = {name: array("i", [0]) for name in _OFFSET_COLUMNS}
        quality_valid: list[bool] = []
        partial: list[bool] = []
        carrier: list[bool] = []
        calls = analyses = 0
        for cid in order:
            write, write_calls = unique[cid]
            analyses += self._emit_results(out, write)
            variant = write.variant
            for name, value in (
                ("correlation_id", write.correlation_id),
                ("job_id", write.job_id),
                ("tenant_id", write.tenant_id),
                ("file_id", variant.file_id),
                ("source_name", variant.source_name),
                ("chromosome", variant.chromosome),
                ("reference", variant.reference),
                ("alternate", variant.alternate),
                ("variant_id", variant.id),
            ):
                out.text(name).add(value)
            out.value("record_index", "q").append(variant.record_index)
            out.value("position", "q").append(variant.position)
            out.value("alt_index", "i").append(variant.alt_index)
            out.value("quality", "d").append(variant.quality if variant.has_quality else 0.0)
            quality_valid.append(variant.has_quality)
            for name in variant.filters:
                out.text("filters").add(name)
            offsets["filters.offsets"].append(len(out.text("filters").offsets) - 1)
            kept = _kept_results(write)
            out.text("classification").add(write.classification)
            out.text("priority_tier").add(write.priority_tier)
            out.text("gene").add(next((r.annotation.gene for r in kept if r.annotation.gene), ""))
            out.text("variant_class").add(
                next((r.annotation.variant_class for r in kept if r.annotation.variant_class), "")
            )
            partial.append(write.partial)
            for provider in write.missing_providers:
                out.text("missing_providers").add(provider)
            offsets["missing_providers.offsets"].append(len(out.text("missing_providers").offsets) - 1)
            for call in write_calls:
                carrier.append(self._emit_call(out, write, call, offsets))
                calls += 1
            offsets["genotypes.offsets"].append(calls)
            offsets["carriers.offsets"].append(len(out.text("carriers").offsets) - 1)
            out.value("updated_at", "q").append(_updated(write)[0])
        buffers: dict[str, Any] = {name: text.buffers() for name, text in out.texts.items()}
        buffers |= {name: values.tobytes() for name, values in out.values.items()}
        buffers |= {name: values.tobytes() for name, values in offsets.items()}
        buffers["quality.valid"] = _bitmap(quality_valid)
        buffers["partial"] = _bitmap(partial)
        buffers["call.carrier"] = _bitmap(carrier)
        buffers["rows"] = (len(order), calls, analyses)
        self._writes = []
        return buffers

    def _emit_results(self, out: _Columns, write: events_pb2.DatabaseWrite) -> int:
        kept = _kept_results(write)
        for result in kept:
            status = (
                self._statuses[result.status] if 0 <= result.status < len(self._statuses) else self._unknown
            )
            detail = result
            if result.HasField("variant"):
                detail = analysis_pb2.AnalysisResult()
                detail.CopyFrom(result)
                detail.ClearField("variant")
            for name, value in (
                ("analysis.analysis_id", f"{write.correlation_id}:{result.provider}"),
                ("analysis.correlation_id", write.correlation_id),
                ("analysis.job_id", write.job_id),
                ("analysis.tenant_id", write.tenant_id),
                ("analysis.provider", result.provider),
                ("analysis.model", result.model),
                ("analysis.status", status),
                ("analysis.classification", result.classification),
                ("analysis.error", result.error),
            ):
                out.text(name).add(value)
            out.text("analysis.detail").add(detail.SerializeToString())
            out.value("analysis.confidence", "d").append(result.confidence)
            out.text("analysis.file_id").add(write.variant.file_id)
            out.value("analysis.record_index", "q").append(write.variant.record_index)
        return len(kept)

    @staticmethod
    def _emit_call(
        out: _Columns, write: events_pb2.DatabaseWrite, call: GenotypeCall, offsets: dict[str, array[int]]
    ) -> bool:
        """Emit one call's columns; returns whether it is a carrier of the write's ALT allele."""
        alleles = call.alleles
        out.text("call.sample").add(call.sample)
        out.text("call.genotype").add(_genotype(alleles, call.phased))
        out.value("call.depth", "i").append(call.depth)
        out.value("call.genotype_quality", "i").append(call.genotype_quality)
        depths = out.value("call.allele_depths", "i")
        depths.extend(call.allele_depths)
        offsets["call.allele_depths.offsets"].append(len(depths))
        # A carrier holds this ALT allele (alt_index + 1) in its genotype (VCFv4.1 section 1.4.2).
        carrier = write.variant.alt_index + 1 in alleles
        if carrier:
            out.text("carriers").add(call.sample)
        return carrier
