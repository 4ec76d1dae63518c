"""QueryService: the writer owns the stores, so every read of results goes through it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from vcf_agent.control import invalid_argument, may_see, tenant_scope
from vcf_agent.v1 import query_pb2, query_pb2_grpc

from ._graph_store import GraphStore
from ._lance_store import LanceStore, VariantQuery, parse_region

Context = grpc.aio.ServicerContext[Any, Any]
_MAX_PAGE = 1000


class QueryApi(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, lance: LanceStore, graph: GraphStore) -> None:
        self._lance = lance
        self._graph = graph

    async def GetVariant(
        self, request: query_pb2.GetVariantRequest, context: Context
    ) -> query_pb2.StoredVariant:
        if not request.correlation_id:
            await invalid_argument(context, "correlation_id", "correlation_id is required")
        found = await asyncio.to_thread(self._lance.get, request.correlation_id)
        if found is None or not may_see(found.tenant_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no variant {request.correlation_id!r}")
            raise AssertionError("unreachable")
        return found

    async def QueryVariants(
        self, request: query_pb2.QueryVariantsRequest, context: Context
    ) -> query_pb2.QueryVariantsResponse:
        if request.page_size < 0 or request.page_size > _MAX_PAGE:
            await invalid_argument(context, "page_size", f"page_size must be 0..{_MAX_PAGE}")
        if request.region:
            # The store's own parser, so what passes here is exactly what the query accepts.
            try:
                parse_region(request.region)
            except ValueError as exc:
                await invalid_argument(context, "region", str(exc))
        try:
            offset = int(request.page_token or "0")
        except ValueError:
            offset = -1
        if offset < 0:
            await invalid_argument(context, "page_token", "page_token is not one this service issued")
        if not may_see(request.tenant_id or (tenant_scope() or "")):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a tenant token queries only its tenant")
        limit = request.page_size or 100
        query = VariantQuery(
            job_id=request.job_id,
            tenant_id=request.tenant_id or tenant_scope() or "",
            region=request.region,
            gene=request.gene,
            sample=request.sample,
            classification=request.classification,
            limit=limit,
            offset=offset,
        )
        variants, total = await asyncio.to_thread(self._lance.query, query)
        response = query_pb2.QueryVariantsResponse(variants=variants, total=total)
        if offset + len(variants) < total:
            response.next_page_token = str(offset + len(variants))
        return response

    async def GetStoreStats(
        self, request: query_pb2.GetStoreStatsRequest, context: Context
    ) -> query_pb2.GetStoreStatsResponse:
        if tenant_scope() is not None:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "store statistics span tenants; use an admin token"
            )
        job_id = request.job_id or None
        variants = await asyncio.to_thread(self._lance.count, job_id)
        analyses = await asyncio.to_thread(self._lance.count_analyses, job_id)
        graph = await asyncio.to_thread(self._graph.counts, job_id)
        return query_pb2.GetStoreStatsResponse(
            variants=variants,
            analyses=analyses,
            graph_variants=graph.variants,
            graph_samples=graph.samples,
            graph_carries=graph.carried_by,
            graph_analyses=graph.analyses,
            graph_files=graph.files,
            graph_genes=graph.genes,
        )
