"""`vcf-agent dev kafka|iggy`: a local broker for development and benchmarks, until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys


async def _serve_until_signalled(server: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if server == "kafka":
        from vcf_agent.localdev import LocalKafkaBroker

        async with LocalKafkaBroker() as broker:
            print(f"kafka://{broker.bootstrap_servers}", flush=True)
            await stop.wait()
        return 0
    from vcf_agent.localdev import LocalIggyServer, find_iggy_server

    if find_iggy_server() is None:
        print("no iggy-server binary: set IGGY_SERVER_BIN or put iggy-server on PATH", file=sys.stderr)
        return 2
    async with LocalIggyServer() as iggy:
        print(iggy.url, flush=True)
        await stop.wait()
    return 0


def run_dev_server(server: str) -> int:
    return asyncio.run(_serve_until_signalled(server))
