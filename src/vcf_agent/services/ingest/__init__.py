"""Ingest service: VCF files and LIMS uploads in, `vcf-variants` out, jobs tracked.

Jobs run in streaming or batch mode per the flags (see `_job_mode`); the
batch path runs the router's and aggregator's stage code in this process
(see `_batch_path`). The flags come from the caller's FlagStore (the runner and
`vcf-agent run` pass theirs); built without one, ingest keeps its own replica,
converged from `control-events` like every other copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vcf_agent.analysis import RouterSettings, analysis_providers
from vcf_agent.bus import Bus, Record
from vcf_agent.config import Settings
from vcf_agent.control import FlagStore, ServiceApi
from vcf_agent.lifecycle import AsyncComponent
from vcf_agent.observability import SAMPLE_INTERVAL_S, PeriodicSampler
from vcf_agent.processing import CommitOffsets, StreamProcessor
from vcf_agent.runner import ServiceParts, service_flags
from vcf_agent.schema import PayloadError, decode
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc

from ._api import IngestApi
from ._batch_path import BatchPath
from ._checkpoints import Checkpoint, CheckpointBook
from ._input_limits import InputLimitError, InputLimits
from ._job_mode import ENABLE_STREAMING, FALLBACK_TO_BATCH, STREAMING_ROLLOUT, ModeChoice, choose_mode
from ._job_watchdog import JobWatchdog
from ._jobs import JobRecord, JobRegistry, job_id_for, sample_jobs
from ._publisher import VALIDATION_MODES, ValidationMode, VariantPublisher, file_digest
from ._submitted_paths import NOT_ALLOWED, SubmittedPathPolicy
from ._uploads import UploadArea
from ._validation_report import ValidationReport, validate_command, validate_file

__all__ = [
    "ENABLE_STREAMING",
    "FALLBACK_TO_BATCH",
    "NOT_ALLOWED",
    "STREAMING_ROLLOUT",
    "VALIDATION_MODES",
    "BatchPath",
    "Checkpoint",
    "CheckpointBook",
    "IngestParts",
    "InputLimitError",
    "InputLimits",
    "JobRecord",
    "JobRegistry",
    "JobWatchdog",
    "ModeChoice",
    "SubmittedPathPolicy",
    "UploadArea",
    "ValidationMode",
    "ValidationReport",
    "VariantPublisher",
    "build",
    "choose_mode",
    "file_digest",
    "job_id_for",
    "validate_command",
    "validate_file",
]

NAME = "ingest"


@dataclass(slots=True, kw_only=True)
class IngestParts(ServiceParts):
    """Ingest's parts with the handles in-process callers use (`vcf-agent run`, tests)."""

    publisher: VariantPublisher = field()
    registry: JobRegistry = field()
    flags: FlagStore = field()
    uploads: UploadArea = field()


def build(
    settings: Settings,
    bus: Bus,
    *,
    flags: FlagStore | None = None,
    router_settings: RouterSettings | None = None,
) -> IngestParts:
    """The ingest service: publisher, batch path, job tracker fed by `user-notifications`, and its API.

    `flags` is a running FlagStore to read modes from (else a replica is built);
    `router_settings` configures the batch path's LLM providers (`settings.router` when None).
    """
    components: list[AsyncComponent] = []
    if flags is None:
        flags = service_flags("ingest-modes", settings, bus)
        components.append(flags)
    registry = JobRegistry(settings.data_dir / "ingest" / "jobs.sqlite")
    checkpoints = CheckpointBook(settings.data_dir / "ingest" / "jobs.sqlite")
    batch = BatchPath(bus, settings, analysis_providers(settings, bus, router_settings or settings.router))
    publisher = VariantPublisher(
        bus,
        settings,
        registry,
        validation=settings.ingest_validation,
        flags=flags,
        batch=batch,
        checkpoints=checkpoints,
    )

    async def track(records: list[Record]) -> CommitOffsets | None:
        for record in records:
            try:
                note = decode(record.value, record.headers, events_pb2.Notification)
            except PayloadError:
                continue  # The notifier dead-letters corrupt notifications; the tracker just skips them.
            registry.apply(note)
        return None

    tracker = StreamProcessor(
        bus,
        [settings.topology.user_notifications],
        "ingest-job-tracker",
        track,
        service=NAME,
        max_records=500,
    )
    watchdog = JobWatchdog(registry, publisher, bus, settings)
    uploads = UploadArea(
        settings.data_dir / "ingest" / "uploads",
        registry,
        publisher.running,
        max_bytes=settings.upload_max_bytes,
        retention_s=settings.upload_retention_s,
    )
    # The service's own files (uploads, stores, job tables) are never readable by path.
    paths = SubmittedPathPolicy(settings.ingest_allowed_dirs, [settings.data_dir])
    api = IngestApi(publisher, registry, uploads, paths)
    return IngestParts(
        name=NAME,
        # Flags and the batch path's providers are ready before the first job starts.
        components=[*components, batch, publisher, tracker, watchdog, uploads],
        apis=[
            ServiceApi(
                lambda server: jobs_pb2_grpc.add_IngestServiceServicer_to_server(api, server),
                [jobs_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name],
            )
        ],
        # What ControlService.CompareModes answers from.
        job_runs=registry,
        lag_reads=watchdog,
        samplers=[PeriodicSampler("jobs", lambda: sample_jobs(registry), SAMPLE_INTERVAL_S)],
        publisher=publisher,
        registry=registry,
        flags=flags,
        uploads=uploads,
    )
