"""The ROUTING_PROVIDERS flag decides which providers a job's variants are sent to."""

from __future__ import annotations

from pathlib import Path

from vcf_agent.analysis import VariantRouter
from vcf_agent.bus import StreamSpec, open_bus
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore
from vcf_agent.v1 import control_pb2, variant_pb2


def _batch(tenant: str, providers: tuple[str, ...] = ()) -> variant_pb2.VariantBatch:
    batch = variant_pb2.VariantBatch(providers=providers)
    batch.variants.add(correlation_id="c", job_id=f"job-{tenant}", tenant_id=tenant, file_id="f")
    return batch


async def test_flag_overrides_the_jobs_providers_and_rolls_out_per_tenant(tmp_path: Path) -> None:
    bus = open_bus(f"memory://routing-{tmp_path.name}")
    await bus.start()
    await bus.ensure_streams([StreamSpec("control-events", 1)])
    flags = FlagStore(tmp_path / "flags.sqlite", bus, "control-events", "router", group="routing-test")
    await flags.start()
    try:
        router = VariantRouter(
            bus, Settings(bus_url="memory://x"), frozenset({"local", "claude"}), flags=flags
        )
        assert router.providers_for(_batch("lab-a")) == ["local"], "no flag: configuration"
        assert router.providers_for(_batch("lab-a", ("local", "claude"))) == ["local", "claude"], "the job's"

        static = control_pb2.Flag(
            key="ROUTING_PROVIDERS",
            type=control_pb2.FLAG_TYPE_STRING,
            value=control_pb2.FlagValue(string_value="local, claude, unknown"),
        )
        await flags.set(static, None, "test")
        # Unknown providers are ignored rather than failing the job.
        assert router.providers_for(_batch("lab-a")) == ["local", "claude"]

        canary = control_pb2.Flag(
            key="ROUTING_PROVIDERS",
            type=control_pb2.FLAG_TYPE_PERCENTAGE_ROLLOUT,
            percentage=30,
            bucket_by="tenant_id",
            on_value=control_pb2.FlagValue(string_value="local,claude"),
            off_value=control_pb2.FlagValue(string_value="local"),
        )
        await flags.set(canary, None, "test")
        tenants = [f"lab-{i}" for i in range(1000)]
        with_claude = {t for t in tenants if "claude" in router.providers_for(_batch(t))}
        assert 250 < len(with_claude) < 350
        assert with_claude == {t for t in tenants if "claude" in router.providers_for(_batch(t))}, "sticky"
    finally:
        await flags.stop()
        await bus.stop()
