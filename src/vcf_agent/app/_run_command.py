"""`vcf-agent run`: the one-process pipeline with a live progress display and a summary."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from vcf_agent.app.pipeline import LocalPipeline
from vcf_agent.config import Settings
from vcf_agent.observability import MetricsEndpoint
from vcf_agent.runner import freeze_startup_heap
from vcf_agent.schema import ended_badly, exit_code, file_issues_summary, state_name
from vcf_agent.v1 import events_pb2, jobs_pb2

_STAGES = ("ingested", "analysed", "stored")


async def run_files(settings: Settings, files: list[Path], *, as_json: bool, tenant_id: str) -> int:
    """Analyse each file in turn; exits with the worst job's code (see schema.exit_code)."""
    console = Console(stderr=True)
    ended: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        if settings.metrics_port is not None:
            await stack.enter_async_context(MetricsEndpoint(settings.grpc_host, settings.metrics_port))
        pipeline = await stack.enter_async_context(LocalPipeline(settings))
        freeze_startup_heap()
        for path in files:
            started = time.perf_counter()
            job_id = await pipeline.submit(path, tenant_id=tenant_id)
            if as_json or not console.is_terminal:
                job = await pipeline.wait(job_id)
            else:
                job = await _with_progress(pipeline, job_id, path, console)
            seconds = time.perf_counter() - started
            stats = await pipeline_stats(pipeline, job_id)
            if as_json:
                print(json.dumps(_summary_json(job, seconds, settings, stats)), flush=True)
            else:
                _print_summary(Console(), job, seconds, settings, stats)
            if job.state != events_pb2.JOB_STATE_COMPLETE:
                # Whatever the output format, a job that did not end complete says why on stderr.
                print(ended_badly(job), file=sys.stderr, flush=True)
            ended.append(job.state)
    return exit_code(ended)


async def pipeline_stats(pipeline: LocalPipeline, job_id: str) -> dict[str, object]:
    # Counted in the store, so exact on replays.
    return {"classifications": pipeline.writer.lance.classifications(job_id)}


async def _with_progress(pipeline: LocalPipeline, job_id: str, path: Path, console: Console) -> jobs_pb2.Job:
    progress = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}
    console.print(f"[bold]{path.name}[/] -> job {job_id}")
    with progress:
        for stage in _STAGES:
            tasks[stage] = progress.add_task(stage, total=None)

        def update(job: jobs_pb2.Job) -> None:
            total = job.counts.total or None
            for stage in _STAGES:
                progress.update(tasks[stage], completed=getattr(job.counts, stage), total=total)

        return await pipeline.wait(job_id, on_progress=update)


def _summary_json(
    job: jobs_pb2.Job, seconds: float, settings: Settings, stats: dict[str, object]
) -> dict[str, object]:
    return {
        "job_id": job.job_id,
        "status": state_name(job.state),
        "file": job.source_name,
        "variants": job.counts.total,
        "stored": job.counts.stored,
        "dead_lettered": job.counts.dead_lettered,
        "gvcf_reference_blocks": job.counts.reference_blocks,
        "samples": job.samples,
        "providers": list(job.providers),
        "seconds": round(seconds, 3),
        "error": job.error,
        "file_issues": [
            {"line": i.line, "column": i.column, "code": i.code, "message": i.message, "warning": i.warning}
            for i in job.file_issues
        ],
        "more_file_issues": job.more_file_issues,
        "provider_counts": {
            name: {"ok": c.ok, "failed": c.failed, "missing": c.missing}
            for name, c in sorted(job.counts.provider_counts.items())
        },
        "data_dir": str(settings.data_dir.resolve()),
        **stats,
    }


def _print_summary(
    console: Console, job: jobs_pb2.Job, seconds: float, settings: Settings, stats: dict[str, object]
) -> None:
    summary = _summary_json(job, seconds, settings, stats)
    table = Table(show_header=False, box=None)
    for key in (
        "job_id",
        "status",
        "file",
        "variants",
        "stored",
        "dead_lettered",
        "samples",
        "seconds",
        "data_dir",
    ):
        table.add_row(key, str(summary[key]))
    table.add_row("providers", ", ".join(job.providers))
    for name, answers in sorted(job.counts.provider_counts.items()):
        table.add_row(f"  {name}", f"ok {answers.ok}, failed {answers.failed}, no answer {answers.missing}")
    classes = summary.get("classifications") or {}
    if isinstance(classes, dict):
        table.add_row("classes", ", ".join(f"{k}: {v}" for k, v in sorted(classes.items())))
    if job.error:
        table.add_row("error", job.error)
    if job.file_issues:
        headline, rows = file_issues_summary(job)
        table.add_row("file issues", headline)
        for where, what in rows:
            table.add_row(f"  {where}", what)
    console.print(table)
