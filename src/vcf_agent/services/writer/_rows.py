"""DatabaseWrite batches turned into the Arrow tables both stores load.

Both stores are columnar bulk loaders. The compiled row builder
(_row_builder.c) reads the serialized DatabaseWriteBatch payloads straight
into column buffers, so no protobuf object is made per field; this module
hands it the schema and wraps its buffers as Arrow arrays. Without the
extension (or with VCF_AGENT_NO_EXTENSIONS=1) its pure-Python twin
(_row_builder_py.py) fills the same buffers through protobuf. Every value is
derived from the message content (never the wall clock), so a replayed batch
yields identical rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from vcf_agent.compiled import compiled_module
from vcf_agent.schema import GenotypeCall, PayloadError, genotype_columns
from vcf_agent.v1 import analysis_pb2, events_pb2
from vcf_agent.v1 import wire_numbers as wire

from ._row_builder_py import Collector as PythonCollector

# What the builder's take() returns: column name -> bytes (fixed-width values, offsets,
# bitmaps) or (offsets, data) for text; "rows" -> (variants, calls, analyses).
Buffers = dict[str, Any]

GENOTYPE_TYPE = pa.struct(
    [
        pa.field("sample", pa.string()),
        pa.field("genotype", pa.string()),
        pa.field("depth", pa.int32()),
        pa.field("genotype_quality", pa.int32()),
        pa.field("allele_depths", pa.list_(pa.int32())),
    ]
)

VARIANT_SCHEMA = pa.schema(
    [
        pa.field("correlation_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("file_id", pa.string()),
        pa.field("source_name", pa.string()),
        pa.field("record_index", pa.int64()),
        pa.field("chromosome", pa.string()),
        pa.field("position", pa.int64()),
        pa.field("reference", pa.string()),
        pa.field("alternate", pa.string()),
        pa.field("alt_index", pa.int32()),
        pa.field("variant_id", pa.string()),
        # Null for a `.` QUAL, so it is never confused with a real 0.
        pa.field("quality", pa.float64()),
        pa.field("filters", pa.list_(pa.string())),
        pa.field("classification", pa.string()),
        pa.field("priority_tier", pa.string()),
        pa.field("gene", pa.string()),
        pa.field("variant_class", pa.string()),
        pa.field("partial", pa.bool_()),
        pa.field("missing_providers", pa.list_(pa.string())),
        pa.field("genotypes", pa.list_(GENOTYPE_TYPE)),
        # Samples whose genotype holds this ALT allele: what a "sample" filter means.
        pa.field("carriers", pa.list_(pa.string())),
        # Latest provider completion (else the variant's timestamp), not write time,
        # so a replay rewrites the same value.
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)

ANALYSIS_SCHEMA = pa.schema(
    [
        # correlation_id + ':' + provider: one row per provider answer.
        pa.field("analysis_id", pa.string(), nullable=False),
        pa.field("correlation_id", pa.string()),
        pa.field("job_id", pa.string()),
        pa.field("tenant_id", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("status", pa.string()),
        pa.field("classification", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("error", pa.string()),
        # The whole AnalysisResult (minus the echoed variant) as protobuf bytes:
        # serialising is ~20x cheaper than JSON on the write path, and JSON is
        # rendered only for the few rows a query returns.
        pa.field("detail", pa.binary()),
        # The variant's place in its file: a page's answers are looked up as a range of records
        # (their variants lie near one another in the file) instead of a key apiece (see
        # LanceStore._fetch). Last, where a table created before them has them added.
        pa.field("file_id", pa.string()),
        pa.field("record_index", pa.int64()),
    ]
)

# Flat per-call rows, in the order of the variants' `genotypes` lists, so a call's variant is its
# list parent there (pc.list_parent_indices) and its tenant and correlation id are not copied per
# call. `carrier` is the row builders' mask of calls whose genotype holds the variant's ALT: what
# the graph's CARRIED_BY edges and the carriers table keep, with no per-call key matching.
CALL_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string()),
        pa.field("genotype", pa.string()),
        pa.field("depth", pa.int32()),
        pa.field("genotype_quality", pa.int32()),
        pa.field("carrier", pa.bool_()),
    ]
)


@dataclass(frozen=True, slots=True)
class WriteRows:
    """One batch of writes as Arrow tables, one row per key (last write wins)."""

    variants: pa.Table
    analyses: pa.Table
    calls: pa.Table

    def __len__(self) -> int:
        return int(self.variants.num_rows)


class RowCollector:
    """DatabaseWriteBatch payloads gathered for one store batch, turned into rows at once.

    add() runs as records arrive and rejects a corrupt payload on its own;
    take() fills the column buffers with the GIL released (only wrapping them
    as Arrow arrays holds it), so it belongs on a worker thread. Duplicate
    correlation ids (at-least-once redelivery) keep the last write in the
    place of the first, because merge_insert rejects a source with two rows
    for one key; within a write, the last answer per provider wins the same
    way.
    """

    def __init__(self) -> None:
        compiled = compiled_module(f"{__package__}._row_builder")
        collector = PythonCollector if compiled is None else cast("type[PythonCollector]", compiled.Collector)
        self._native = collector(_WIRE_SCHEMA, _STATUS_NAMES, "unspecified")
        self._payload_bytes = 0

    def __len__(self) -> int:
        """Writes collected, duplicates included."""
        return len(self._native)

    @property
    def payload_bytes(self) -> int:
        """Serialized bytes collected: what bounds a batch's memory, whatever its sample count.

        A variant's rows grow with its calls (measured, Arrow bytes per variant: 631 with one
        sample, 1,729 with 10, 12,709 with 100, 61,509 with 500; about 1.6 to 5.2 times its
        payload), so a count of variants alone does not bound a batch.
        """
        return self._payload_bytes

    def add(self, payload: bytes) -> list[bytes]:
        """Collect a serialized DatabaseWriteBatch; returns its serialized JobMarkers.

        A payload the protobuf runtime would reject raises PayloadError and
        leaves the collector as it was.
        """
        try:
            markers = self._native.add(payload)
        except ValueError as exc:
            raise PayloadError(f"corrupt {_BATCH.full_name} payload: {exc}") from exc
        self._payload_bytes += len(payload)
        return markers

    def take(self) -> WriteRows:
        """The rows of everything collected; the collector is empty afterwards."""
        self._payload_bytes = 0
        return _tables(self._native.take())


def build_rows(writes: Sequence[events_pb2.DatabaseWrite]) -> WriteRows:
    """Rows for writes already decoded (tests, direct store calls); the writer collects payloads."""
    collector = RowCollector()
    collector.add(events_pb2.DatabaseWriteBatch(writes=writes).SerializeToString())
    return collector.take()


_BATCH = events_pb2.DatabaseWriteBatch.DESCRIPTOR
_FIXED64 = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
_FIXED32 = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32}


def _field_kind(field: FieldDescriptor) -> int:
    """The generated WIRE_CHECK code: what the builder's wire check verifies for a field."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return wire.WIRE_CHECK_STRING
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return wire.WIRE_CHECK_MESSAGE
    if field.type == FieldDescriptor.TYPE_BYTES:
        return wire.WIRE_CHECK_BYTES
    if field.type in _FIXED64:
        return wire.WIRE_CHECK_FIXED64
    if field.type in _FIXED32:
        return wire.WIRE_CHECK_FIXED32
    return wire.WIRE_CHECK_VARINT


def _wire_schema(root: Descriptor) -> tuple[tuple[str, tuple[tuple[int, int, bool, int], ...]], ...]:
    """Every message type reachable from `root`, root first, as the builder's wire check reads them.

    Taken from the generated descriptors, so the check follows the schema as it evolves.
    """
    order = [root]
    position = {root.full_name: 0}
    messages = []
    for message in order:
        fields = []
        for field in message.fields:
            child = -1
            nested = field.message_type
            if nested is not None:
                child = position.setdefault(nested.full_name, len(order))
                if child == len(order):
                    order.append(nested)
            fields.append((field.number, _field_kind(field), field.is_repeated, child))
        messages.append((message.full_name, tuple(fields)))
    return tuple(messages)


def _status_names() -> tuple[str, ...]:
    """Lower-case status names indexed by number; a number without a name reads as unspecified."""
    values = analysis_pb2.AnalysisResult.Status.DESCRIPTOR.values
    names = ["unspecified"] * (max(value.number for value in values) + 1)
    for value in values:
        names[value.number] = value.name.removeprefix("STATUS_").lower()
    return tuple(names)


_WIRE_SCHEMA = _wire_schema(_BATCH)
_STATUS_NAMES = _status_names()


def _text(parts: Buffers, name: str, rows: int, kind: pa.DataType | None = None) -> pa.Array:
    offsets, data = parts[name]
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(kind or pa.string(), rows, buffers)


def _fixed(
    parts: Buffers, name: str, rows: int, kind: pa.DataType, validity: bytes | None = None
) -> pa.Array:
    bitmap = None if validity is None else pa.py_buffer(validity)
    return pa.Array.from_buffers(kind, rows, [bitmap, pa.py_buffer(parts[name])])


def _list(parts: Buffers, name: str, rows: int, values: pa.Array) -> pa.Array:
    offsets = pa.Array.from_buffers(pa.int32(), rows + 1, [None, pa.py_buffer(parts[name + ".offsets"])])
    return pa.ListArray.from_arrays(offsets, values)


def _strings(parts: Buffers, name: str, rows: int) -> pa.Array:
    """A list<string> column: per-row offsets into one flat string array."""
    strings = len(parts[name][0]) // 4 - 1
    return _list(parts, name, rows, _text(parts, name, strings))


def _tables(parts: Buffers) -> WriteRows:
    variants, calls, analyses = parts["rows"]
    call_columns = {name: _text(parts, "call." + name, calls) for name in ("sample", "genotype")}
    call_columns["depth"] = _fixed(parts, "call.depth", calls, pa.int32())
    call_columns["genotype_quality"] = _fixed(parts, "call.genotype_quality", calls, pa.int32())
    call_columns["carrier"] = _fixed(parts, "call.carrier", calls, pa.bool_())
    allele_depths = parts["call.allele_depths"]
    depths = _list(
        parts,
        "call.allele_depths",
        calls,
        _fixed(parts, "call.allele_depths", len(allele_depths) // 4, pa.int32()),
    )
    genotypes = pa.StructArray.from_arrays(
        [*(call_columns[name] for name in ("sample", "genotype", "depth", "genotype_quality")), depths],
        fields=list(GENOTYPE_TYPE),
    )
    variant_columns = {
        name: _text(parts, name, variants)
        for name in (
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
        )
    }
    variant_columns |= {
        "record_index": _fixed(parts, "record_index", variants, pa.int64()),
        "position": _fixed(parts, "position", variants, pa.int64()),
        "alt_index": _fixed(parts, "alt_index", variants, pa.int32()),
        "quality": _fixed(parts, "quality", variants, pa.float64(), parts["quality.valid"]),
        "partial": _fixed(parts, "partial", variants, pa.bool_()),
        "updated_at": _fixed(parts, "updated_at", variants, pa.timestamp("us", tz="UTC")),
        "genotypes": _list(parts, "genotypes", variants, genotypes),
    }
    for name in ("filters", "missing_providers", "carriers"):
        variant_columns[name] = _strings(parts, name, variants)
    analysis_columns = {
        name: _text(parts, "analysis." + name, analyses, pa.binary() if name == "detail" else None)
        for name in ANALYSIS_SCHEMA.names
        if name not in ("confidence", "record_index")
    }
    analysis_columns["confidence"] = _fixed(parts, "analysis.confidence", analyses, pa.float64())
    analysis_columns["record_index"] = _fixed(parts, "analysis.record_index", analyses, pa.int64())
    return WriteRows(
        variants=_table(variant_columns, VARIANT_SCHEMA),
        analyses=_table(analysis_columns, ANALYSIS_SCHEMA),
        calls=_table(call_columns, CALL_SCHEMA),
    )


def _table(columns: dict[str, pa.Array], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def answer_counts(variants: pa.Table, analyses: pa.Table) -> list[tuple[str, str, int, int]]:
    """(job, provider, slot, answers) of a batch's rows: slot 0 ok, 1 failed, 2 missing (a partial
    variant stored without that provider's answer)."""
    ok = pc.equal(analyses.column("status"), "ok")
    counted = (
        pa.table({"job_id": analyses.column("job_id"), "provider": analyses.column("provider"), "ok": ok})
        .group_by(["job_id", "provider", "ok"])
        .aggregate([("ok", "count")])
    )
    found = [
        (job_id, provider, 0 if answered_ok else 1, count)
        for job_id, provider, answered_ok, count in zip(
            *(counted.column(name).to_pylist() for name in ("job_id", "provider", "ok", "ok_count")),
            strict=True,
        )
    ]
    partial = variants.filter(variants.column("partial"))
    if partial.num_rows:
        missing = partial.column("missing_providers")
        flat = (
            pa.table(
                {
                    "job_id": pc.take(partial.column("job_id"), pc.list_parent_indices(missing)),
                    "provider": pc.list_flatten(missing),
                }
            )
            .group_by(["job_id", "provider"])
            .aggregate([("provider", "count")])
        )
        found.extend(
            (job_id, provider, 2, count)
            for job_id, provider, count in zip(
                *(flat.column(name).to_pylist() for name in ("job_id", "provider", "provider_count")),
                strict=True,
            )
        )
    return found


def warming_rows() -> WriteRows:
    """One made-up variant the graph keeps, with a carrier, a gene and an answer: a batch that
    goes every way a batch of new variants does, for the stores to warm on (StoreSink builds it
    once for GraphStore.warm and LanceStore.warm)."""
    key = "0" * 32
    write = events_pb2.DatabaseWrite(
        correlation_id=key, job_id="warm", tenant_id="warm", classification="pathogenic"
    )
    variant = write.variant
    variant.correlation_id, variant.job_id, variant.tenant_id = key, "warm", "warm"
    variant.file_id, variant.source_name = "0" * 64, "warm.vcf"
    variant.chromosome, variant.position, variant.reference, variant.alternate = "chr1", 1, "A", "G"
    variant.all_alternates.append("G")
    variant.genotypes.CopyFrom(genotype_columns([GenotypeCall("warm", (0, 1), False, 10, 50, (5, 5))]))
    answer = write.results.add(
        correlation_id=key,
        job_id="warm",
        tenant_id="warm",
        provider="local",
        status=analysis_pb2.AnalysisResult.STATUS_OK,
        classification="pathogenic",
    )
    answer.annotation.gene = "WARM"
    return build_rows([write])
