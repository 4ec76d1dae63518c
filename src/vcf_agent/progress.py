"""Job progress on `user-notifications`: the one builder every stage (ingest, aggregator, writer) uses.

Each stage reports its own cumulative count; the notifier and ingest's job tracker merge them.
What must not differ between stages lives here: the record is keyed by job id (so one job's
notifications stay in order on one partition), encoded for the job's tenant, and stamped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from vcf_agent.bus import OutgoingMessage
from vcf_agent.schema import HEADER_JOB, encode
from vcf_agent.v1 import events_pb2


def progress_notification(
    job_id: str,
    tenant_id: str,
    stage: events_pb2.Stage.ValueType,
    state: events_pb2.JobState.ValueType,
    *,
    done: int,
    total: int = 0,
    message: str = "",
    classifications: Mapping[str, int] | None = None,
    timestamp: Timestamp | None = None,
    file_id: str = "",
    source_name: str = "",
    samples: int = 0,
    dead_lettered: int = 0,
    providers: Sequence[str] = (),
    provider_counts: Mapping[str, events_pb2.ProviderCounts] | None = None,
    trace_headers: Mapping[str, str] | None = None,
) -> OutgoingMessage:
    """A Notification ready to publish; `timestamp` defaults to now; `trace_headers` continue the
    job's trace (vcf_agent.tracing)."""
    if timestamp is None:
        timestamp = Timestamp()
        timestamp.GetCurrentTime()
    note = events_pb2.Notification(
        job_id=job_id,
        tenant_id=tenant_id,
        stage=stage,
        state=state,
        done=done,
        total=total,
        message=message,
        timestamp=timestamp,
        classifications=classifications,
        file_id=file_id,
        source_name=source_name,
        samples=samples,
        dead_lettered=dead_lettered,
        providers=providers,
        provider_counts=provider_counts,
    )
    payload, headers = encode(note, tenant_id=tenant_id, trace_headers=trace_headers)
    # Whose progress, readable without the payload (a notification the notifier cannot read is
    # dead-lettered, and logged, naming its job).
    headers[HEADER_JOB] = job_id
    return OutgoingMessage(payload, job_id.encode(), headers)
