"""The lines a process writes with `--log-format json`, captured from the code paths under test."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

from vcf_agent.observability import JsonLogFormatter


class _JsonLines(logging.Handler):
    """Formats each record as it is written, as configure_logging's handler does: the log context
    (job and variant) is the writing task's, so formatting later would lose it."""

    def __init__(self, service: str) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonLogFormatter(service))
        self.lines: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextlib.contextmanager
def json_log_lines(service: str, level: int = logging.INFO) -> Iterator[list[dict[str, str]]]:
    """Every line logged meanwhile at `level` or above, parsed from its JSON form."""
    root = logging.getLogger()
    handler = _JsonLines(service)
    handler.setLevel(level)
    was = root.level
    root.addHandler(handler)
    if was > level:
        root.setLevel(level)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(was)


def of(lines: list[dict[str, str]], logger: str) -> list[dict[str, str]]:
    """The lines a module's logger wrote."""
    return [line for line in lines if line["logger"] == logger]
