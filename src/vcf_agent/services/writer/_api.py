"""QueryService: the writer owns the stores, so every read of results goes through it."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from vcf_agent.control import (
    MAX_PAGE_BYTES,
    MAX_PAGE_ROWS,
    abort,
    invalid_argument,
    may_see,
    page_offset,
    requested_tenant,
    tenant_scope,
)
from vcf_agent.v1 import query_pb2, query_pb2_grpc

from ._graph_store import GraphStore
from ._lance_store import LanceStore, VariantQuery

Context = grpc.aio.ServicerContext[Any, Any]


class QueryApi(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, lance: LanceStore, graph: GraphStore) -> None:
        self._lance = lance
        self._graph = graph

    async def GetVariant(
        self, request: query_pb2.GetVariantRequest, context: Context
    ) -> query_pb2.StoredVariant:
        if not request.correlation_id:
            await invalid_argument(context, "correlation_id", "correlation_id is required")
        # A tenant's read is confined in the store's own filter; another tenant's id is simply absent.
        found = await asyncio.to_thread(self._lance.get, request.correlation_id, tenant_scope() or "")
        if found is None or not may_see(found.tenant_id):
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no variant {request.correlation_id!r}")
        return found

    async def QueryVariants(
        self, request: query_pb2.QueryVariantsRequest, context: Context
    ) -> query_pb2.QueryVariantsResponse:
        # Field bounds, the region's syntax and int64 positions included, were checked by the server.
        offset = await page_offset(context, request.page_size, request.page_token, max_size=MAX_PAGE_ROWS)
        tenant = requested_tenant(request.tenant_id)
        if not may_see(tenant):
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "a tenant token queries only its tenant")
        limit = request.page_size or 100
        # Rows alone do not bound a page: a variant of a file with thousands of samples carries
        # every genotype, so a page of them could exceed what a client accepts.
        query = VariantQuery.of_request(
            request, tenant_id=tenant, limit=limit, offset=offset, max_bytes=MAX_PAGE_BYTES
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
