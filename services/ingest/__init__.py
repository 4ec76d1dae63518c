"""Ingest service: VCF files and LIMS uploads in, `vcf-variants` out, jobs tracked."""

from __future__ import annotations

from vcf_agent.bus import Bus, Record
from vcf_agent.config import Settings
from vcf_agent.control import ServiceApi
from vcf_agent.processing import CommitOffsets, StreamProcessor
from vcf_agent.runner import ServiceParts
from vcf_agent.schema import PayloadError, decode
from vcf_agent.v1 import events_pb2, jobs_pb2, jobs_pb2_grpc

from ._api import IngestApi
from ._bench import bench_ingest
from ._jobs import JobRecord, JobRegistry, job_id_for
from ._publisher import VALIDATION_MODES, ValidationMode, VariantPublisher, file_digest
from ._validation_report import ValidationReport, validate_command, validate_file

__all__ = [
    "VALIDATION_MODES",
    "JobRecord",
    "JobRegistry",
    "ValidationMode",
    "ValidationReport",
    "VariantPublisher",
    "bench_ingest",
    "build",
    "file_digest",
    "job_id_for",
    "validate_command",
    "validate_file",
]

NAME = "ingest"


def build(settings: Settings, bus: Bus) -> ServiceParts:
    """The ingest service: publisher, job tracker fed by `user-notifications`, and its API."""
    registry = JobRegistry(settings.data_dir / "ingest" / "jobs.sqlite")
    publisher = VariantPublisher(bus, settings, registry, validation=settings.ingest_validation)

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
    api = IngestApi(publisher, registry, settings.data_dir / "ingest" / "uploads")
    parts = ServiceParts(
        NAME,
        components=[publisher, tracker],
        apis=[
            ServiceApi(
                lambda server: jobs_pb2_grpc.add_IngestServiceServicer_to_server(api, server),
                [jobs_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name],
            )
        ],
    )
    parts.state["publisher"] = publisher
    parts.state["registry"] = registry
    return parts
