"""`vcf-agent`: run the pipeline, serve one service, submit, query, benchmark, start dev servers."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import vcf_agent
from vcf_agent.config import SERVICES, ClientSettings, ConfigError, Settings

EXAMPLE_VCF = Path(__file__).parent.parent / "examples" / "gatk-multisample.vcf"


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {"bus_url": getattr(args, "bus", None), **extra}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "providers", None):
        overrides["providers"] = tuple(p for p in args.providers.split(",") if p)
    if getattr(args, "genes", None):
        overrides["genes_file"] = Path(args.genes)
    return Settings.from_env(**overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from vcf_agent.app._run_command import run_files

    files = [Path(f) for f in args.files] or [EXAMPLE_VCF]
    for path in files:
        if not path.is_file():
            print(f"vcf-agent run: no such file: {path}", file=sys.stderr)
            return 2
    settings = _settings(args)
    return asyncio.run(run_files(settings, files, as_json=args.json, tenant_id=args.tenant))


def _cmd_serve(args: argparse.Namespace) -> int:
    from vcf_agent.app.pipeline import service_builder
    from vcf_agent.runner import serve

    settings = _settings(
        args,
        grpc_port=args.grpc_port,
        grpc_host=args.grpc_host,
        websocket_port=args.websocket_port,
        insecure=args.insecure or None,
    )
    builder = service_builder(args.service)

    def ready(address: str) -> None:
        # One parseable line so supervisors and tests know the service is up.
        print(json.dumps({"service": args.service, "grpc": address, "bus": settings.bus_url}), flush=True)

    asyncio.run(serve(args.service, builder, settings, ready=ready))
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from vcf_agent._lims_client import submit_file

    metadata = {
        "tenant_id": args.tenant,
        "priority": args.priority,
        "idempotency_key": args.idempotency_key or "",
        "providers": [p for p in (args.providers or "").split(",") if p],
        "sample_ids": args.sample or [],
    }
    client = ClientSettings.from_env(token=args.token, tls_ca=args.tls_ca, tls=args.tls)
    return asyncio.run(submit_file(args.ingest, Path(args.file), metadata, watch=args.watch, client=client))


def _cmd_query(args: argparse.Namespace) -> int:
    from vcf_agent.app._query_command import query

    client = ClientSettings.from_env(token=args.token, tls_ca=args.tls_ca, tls=args.tls)
    return asyncio.run(query(args, client))


def _cmd_dev(args: argparse.Namespace) -> int:
    from vcf_agent.app._dev_command import run_dev_server

    return run_dev_server(args.server)


def _cmd_validate(args: argparse.Namespace) -> int:
    from vcf_agent.services.ingest import validate_command

    return validate_command(Path(args.file), as_json=args.json)


def _cmd_chaos(args: argparse.Namespace) -> int:
    from vcf_agent.app import chaos
    from vcf_agent.localdev import find_iggy_server

    binary = find_iggy_server()
    if binary is None:
        print(
            "vcf-agent chaos: no iggy-server binary (set IGGY_SERVER_BIN or put it on PATH)", file=sys.stderr
        )
        return 2
    scenarios = args.scenarios or list(chaos.SCENARIOS)
    results = asyncio.run(chaos.run(scenarios, args.variants, args.outage_s, binary))
    print(chaos.render(results))
    return 0 if all(not r.problems for r in results) else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    from vcf_agent.app import benchmarks

    result = asyncio.run(benchmarks.run(args))
    print(json.dumps(result) if args.json else benchmarks.render(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vcf-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {vcf_agent.__version__}")
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING... (default: VCF_AGENT_LOG_LEVEL or WARNING)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bus", help="bus URL (default: embedded log under --data-dir)")
        p.add_argument("--data-dir", help="where stores and the embedded log live (default ./vcf-agent-data)")
        p.add_argument("--providers", help="comma-separated analysis providers (default: local)")
        p.add_argument("--genes", help="GTF/GFF3/BED file for gene overlap")

    def credentials(p: argparse.ArgumentParser) -> None:
        p.add_argument("--token", help="bearer token sent on every call (default: VCF_AGENT_TOKEN)")
        p.add_argument(
            "--tls-ca",
            help="PEM file of the CA that signed the service's certificate (default: VCF_AGENT_TLS_CA)",
        )
        p.add_argument("--tls", action="store_true", help="use TLS trusting the system's roots")

    run = sub.add_parser("run", help="run all five services in this process on VCF files")
    common(run)
    run.add_argument("files", nargs="*", help="VCF/BCF files (default: the bundled example)")
    run.add_argument("--json", action="store_true", help="print one JSON object per job")
    run.add_argument("--tenant", default="default")
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run one service in this process")
    common(serve)
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--grpc-port", type=int, default=0)
    serve.add_argument(
        "--grpc-host",
        help="address the gRPC and WebSocket servers bind (default: VCF_AGENT_GRPC_HOST or 127.0.0.1)",
    )
    serve.add_argument("--websocket-port", type=int, default=0)
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow binding a non-loopback address with no tokens configured (anyone who can connect"
        " may read and change every tenant's data)",
    )
    serve.set_defaults(func=_cmd_serve)

    submit = sub.add_parser("submit", help="upload a VCF to a running ingest service")
    submit.add_argument("file")
    submit.add_argument("--ingest", required=True, help="HOST:PORT of the ingest service")
    submit.add_argument("--tenant", default="", help="default: the token's tenant, else 'default'")
    submit.add_argument("--watch", action="store_true", help="follow the job until it finishes")
    submit.add_argument("--priority", type=int, default=0, help="higher is analysed first")
    submit.add_argument("--idempotency-key", help="a retry with the same key returns the same job")
    submit.add_argument("--providers", help="comma-separated providers for this job")
    submit.add_argument("--sample", action="append", help="a sample the file must contain (repeatable)")
    credentials(submit)
    submit.set_defaults(func=_cmd_submit)

    query = sub.add_parser("query", help="read stored results")
    query.add_argument("--writer", help="HOST:PORT of a running writer (else read --data-dir directly)")
    query.add_argument("--data-dir", help="data directory of a stopped pipeline")
    query.add_argument("--job")
    query.add_argument("--region", help="chr or chr:start-end")
    query.add_argument("--gene")
    query.add_argument("--sample")
    query.add_argument("--classification")
    query.add_argument("--limit", type=int, default=50)
    query.add_argument("--json", action="store_true")
    credentials(query)
    query.set_defaults(func=_cmd_query)

    dev = sub.add_parser("dev", help="start a local broker for development and benchmarks")
    dev.add_argument("server", choices=["kafka", "iggy"])
    dev.set_defaults(func=_cmd_dev)

    validate = sub.add_parser("validate", help="check a VCF against the VCF 4.1-4.5 specifications")
    validate.add_argument("file")
    validate.add_argument("--json", action="store_true", help="print {valid, errors, warnings} as JSON")
    validate.set_defaults(func=_cmd_validate)

    chaos = sub.add_parser(
        "chaos", help="failover bus (Iggy primary, Kafka fallback) through outages, five processes"
    )
    chaos.add_argument(
        "scenarios",
        nargs="*",
        help="healthy, primary-killed, primary-back-fresh, fallback-killed, both-down (default: all)",
    )
    chaos.add_argument("--variants", type=int, default=500_000)
    chaos.add_argument("--outage-s", type=float, default=20.0, help="how long a killed server stays down")
    chaos.set_defaults(func=_cmd_chaos)
    bench = sub.add_parser("bench", help="measure throughput")
    bench.add_argument("target", choices=["bus", "e2e", "ingest", "providers"])
    bench.add_argument("file", nargs="?", help="VCF file (ingest benchmark)")
    bench.add_argument("--bus", help="bus URL (bus benchmark); default: a fresh embedded log")
    bench.add_argument("--variants", type=int, default=100_000)
    bench.add_argument("--samples", type=int, default=1)
    bench.add_argument(
        "--preset",
        choices=["genome", "cohort", "cohort-500", "single", "latency"],
        help="e2e: a workload of the targets table (overrides --variants and --samples)",
    )
    bench.add_argument(
        "--baseline", action="store_true", help="e2e: also time the plain pysam->Arrow->LanceDB script"
    )
    bench.add_argument("--batch-size", type=int, default=1000)
    bench.add_argument(
        "--processes", action="store_true", help="e2e: run the five services as separate processes"
    )
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        level = (args.log_level or Settings.from_env().log_level).upper()
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        result = int(args.func(args))
    except ConfigError as exc:
        print(f"vcf-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result
