"""Log set-up for every command: text for people, or one JSON object per line for collectors.

A JSON line has timestamp, level, service, logger, message, the current trace and span ids
(with tracing on), and the job and correlation (variant) ids the line is about: from the call's
`extra` (log.info("...", extra={"job_id": job, "correlation_id": cid})) or else from the log
context of the task writing it (`with log_context(job_id=...)`, as ingest does for a job's
whole run). Messages carry ids and counts, never sample names or genotypes.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from vcf_agent import tracing
from vcf_agent.config import ConfigError

_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

# The job and the variant the current task works on (see log_context; a task that works on one
# job throughout may set current_job_id once): every log line it writes names them.
current_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
_correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")


@contextlib.contextmanager
def log_context(*, job_id: str = "", correlation_id: str = "") -> Iterator[None]:
    """Every log line the current task writes inside the block names this job and/or variant."""
    tokens = []
    if job_id:
        tokens.append((current_job_id, current_job_id.set(job_id)))
    if correlation_id:
        tokens.append((_correlation_id, _correlation_id.set(correlation_id)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class JsonLogFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = tracing.current_ids()
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = span_id
        job_id = getattr(record, "job_id", None) or current_job_id.get()
        if job_id:
            entry["job_id"] = job_id
        correlation_id = getattr(record, "correlation_id", None) or _correlation_id.get()
        if correlation_id:
            entry["correlation_id"] = correlation_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str, service: str) -> None:
    """Root logging for this process; a bad level or format is a ConfigError naming it."""
    level = level.strip().upper()
    if level not in _LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(_LEVELS)}, got {level!r}")
    if log_format not in ("text", "json"):
        raise ConfigError(f"log format must be text or json, got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
