"""`vcf-agent query`: results from a running writer (gRPC) or a stopped pipeline's data directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.table import Table

from vcf_agent._client_channel import call_metadata, open_channel
from vcf_agent.config import ClientSettings, StoreSettings
from vcf_agent.v1 import query_pb2, query_pb2_grpc

if TYPE_CHECKING:
    from vcf_agent.services.writer import StoreLocation


def _request(args: argparse.Namespace) -> query_pb2.QueryVariantsRequest:
    return query_pb2.QueryVariantsRequest(
        job_id=args.job or "",
        region=args.region or "",
        gene=args.gene or "",
        sample=args.sample or "",
        classification=args.classification or "",
        page_size=args.limit,
    )


async def _from_writer(
    address: str, request: query_pb2.QueryVariantsRequest, client: ClientSettings
) -> query_pb2.QueryVariantsResponse:
    async with open_channel(address, client) as channel:
        return await query_pb2_grpc.QueryServiceStub(channel).QueryVariants(
            request, timeout=60, metadata=call_metadata(client)
        )


def _from_store(
    location: StoreLocation, request: query_pb2.QueryVariantsRequest
) -> query_pb2.QueryVariantsResponse:
    # LanceDB allows concurrent readers, so this works beside a running writer too.
    from vcf_agent.services.writer import LanceStore, VariantQuery

    store = LanceStore(location)
    store.open()
    try:
        variants, total = store.query(VariantQuery.of_request(request, tenant_id="", limit=request.page_size))
    finally:
        store.close()
    return query_pb2.QueryVariantsResponse(variants=variants, total=total)


async def query(
    args: argparse.Namespace, client: ClientSettings | None = None, store: StoreSettings | None = None
) -> int:
    request = _request(args)
    try:
        if args.writer:
            response = await _from_writer(args.writer, request, client or ClientSettings())
        else:
            from vcf_agent.services.writer import StoreLocation

            data_dir = Path(args.data_dir or "vcf-agent-data")
            # Read only: no pairing, which is the writer's.
            location = StoreLocation.of_settings(store or StoreSettings(), data_dir)
            location = replace(location, pairing_file=None)
            if not location.is_object_store and not await asyncio.to_thread(Path(location.uri).exists):
                print(f"vcf-agent query: no stored results under {data_dir}", file=sys.stderr)
                return 2
            response = await asyncio.to_thread(_from_store, location, request)
    except grpc.aio.AioRpcError as exc:
        print(f"vcf-agent query: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True)))
        return 0
    table = Table(title=f"{len(response.variants)} of {response.total} variants")
    for column in ("chrom", "pos", "ref", "alt", "gene", "class", "classification", "tier", "carriers"):
        table.add_column(column)
    for v in response.variants:
        carriers = sum(1 for g in v.genotypes if g.genotype not in ("", "0/0", "0|0", "./.", "."))
        table.add_row(
            v.chromosome,
            str(v.position),
            v.reference,
            v.alternate,
            v.gene,
            v.variant_class,
            v.classification,
            v.priority_tier,
            str(carriers),
        )
    Console().print(table)
    return 0
