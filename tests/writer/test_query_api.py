"""QueryService rejects what its store cannot answer with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests._grpc_errors import violated_field
from vcf_agent.bus import open_bus
from vcf_agent.config import Settings
from vcf_agent.runner import ServiceHost, ensure_topology
from vcf_agent.services import writer
from vcf_agent.v1 import query_pb2, query_pb2_grpc


async def test_bad_regions_and_page_tokens_name_their_field(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bus_url=f"embedded://{tmp_path / 'bus'}")
    bus = open_bus(settings.bus_url)
    await bus.start()
    await ensure_topology(bus, settings)
    try:
        async with (
            ServiceHost(writer.build(settings, bus), bus, settings) as host,
            grpc.aio.insecure_channel(host.control.address) as channel,
        ):
            stub = query_pb2_grpc.QueryServiceStub(channel)
            ok = await stub.QueryVariants(
                query_pb2.QueryVariantsRequest(region="chr1:1,000-2,000"), timeout=10
            )
            assert ok.total == 0
            cases = [
                ("region", query_pb2.QueryVariantsRequest(region="chr1:5-3")),
                ("region", query_pb2.QueryVariantsRequest(region="chr1:100-")),
                ("region", query_pb2.QueryVariantsRequest(region="chr 1")),
                ("page_token", query_pb2.QueryVariantsRequest(page_token="-5")),
                ("page_token", query_pb2.QueryVariantsRequest(page_token="next")),
            ]
            for field, request in cases:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.QueryVariants(request, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
                assert violated_field(caught.value) == field
    finally:
        await bus.stop()
