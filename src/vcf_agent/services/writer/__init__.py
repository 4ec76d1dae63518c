"""Writer service: batched, idempotent writes to LanceDB and the graph; serves queries.

The graph engine allows one writing process, so this service owns both
stores and every other component reads results through its QueryService.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vcf_agent.bus import Bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore, ServiceApi
from vcf_agent.processing import StreamProcessor
from vcf_agent.runner import ServiceParts
from vcf_agent.v1 import query_pb2, query_pb2_grpc

from ._api import QueryApi
from ._graph_store import GraphCapacityError, GraphCounts, GraphStore
from ._key_stamp import check_key_stamp
from ._lance_store import CompactionPolicy, LanceStore, VariantQuery
from ._native_memory import allocate_arrow_from_malloc, limit_malloc_arenas
from ._rows import ANALYSIS_SCHEMA, CALL_SCHEMA, GENOTYPE_TYPE, VARIANT_SCHEMA, WriteRows
from ._sink import StoreSink
from ._store_location import StoreLocation, StoreUnavailableError

__all__ = [
    "ANALYSIS_SCHEMA",
    "CALL_SCHEMA",
    "GENOTYPE_TYPE",
    "VARIANT_SCHEMA",
    "CompactionPolicy",
    "GraphCapacityError",
    "GraphCounts",
    "GraphStore",
    "LanceStore",
    "StoreLocation",
    "StoreSink",
    "StoreUnavailableError",
    "VariantQuery",
    "WriteRows",
    "WriterParts",
    "build",
]

NAME = "writer"


@dataclass(slots=True, kw_only=True)
class WriterParts(ServiceParts):
    """The writer's parts with its stores, for in-process callers (`vcf-agent run`, tests)."""

    lance: LanceStore = field()
    graph: GraphStore = field()


def build(settings: Settings, bus: Bus, *, flags: FlagStore | None = None) -> WriterParts:
    """Flags are accepted for the common builder shape; this service reads none yet."""
    del flags
    directory = settings.data_dir / "writer"
    check_key_stamp(directory)
    # Before the stores start their threads, each of which would otherwise get its own arena.
    limit_malloc_arenas()
    allocate_arrow_from_malloc()
    # The graph is a local file engine: it stays in the data directory; LanceDB may be elsewhere.
    graph = GraphStore(
        directory / "graph.lbug",
        buffer_pool_bytes=settings.writer_graph_buffer_pool_bytes,
        checkpoint_bytes=settings.writer_graph_checkpoint_bytes,
        disk_reserve_bytes=settings.writer_disk_reserve_bytes,
    )
    # The graph's uncheckpointed log is freed before each compaction, not held through it: the
    # two were the writer's peak together.
    lance = LanceStore(
        StoreLocation.of_settings(settings.store, settings.data_dir),
        before_compaction=graph.checkpoint_if_written,
    )
    sink = StoreSink(bus, settings, lance, graph)
    processor = StreamProcessor(
        bus,
        # Dead letters too: variants lost upstream count towards their job's end.
        [settings.topology.database_writes, settings.topology.dead_letters],
        "writer",
        sink.handle,
        service=NAME,
        max_records=8,
        idle_calls=True,
        max_in_flight=512,
        reset=sink.reset,
        # A drain stores what is buffered and commits it before the consumer leaves its group.
        flush=sink.flush,
    )
    api = QueryApi(lance, graph)
    return WriterParts(
        name=NAME,
        # Stores open before the consumer starts and close after it stops.
        components=[lance, graph, sink, processor],
        apis=[
            ServiceApi(
                lambda server: query_pb2_grpc.add_QueryServiceServicer_to_server(api, server),
                [query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name],
            )
        ],
        lance=lance,
        graph=graph,
    )
