"""Which backend took each part of a job: what a failover bus's lost backend had of it.

While a job streams onto a failover bus, ingest notes the spans of records
between resume points (ReadPositions, where a read can start again exactly)
and, for each span, the backends that acknowledged its batches together with
each backend's outage count at that moment (`FailoverBus.outages`). A span any
of whose batches went to a backend that has been declared down since is the
part of the job that may be stranded there (unread when it died) or lost (it
came back empty): `VariantPublisher.republish` publishes only those spans
again, not the whole file. Batches taken by the backend that stayed up are not
touched. A ledger that does not start at the file's first record (ingest
restarted mid-job and resumed from its checkpoint) does not know the earlier
spans: then the whole file is published again.

Memory: one span per batch that ends on a record boundary (about one per
`batch_size` variants), kept until the job ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ._vcf_reader import ReadPosition

__all__ = ["JobLedger", "LedgerSpan", "Taker"]

# (backend name, its outage count when it acknowledged the batch)
Taker = tuple[str, int]


@dataclass(slots=True)
class LedgerSpan:
    # The resume point before the span's first record.
    start: ReadPosition
    # Index of its last record (ReadPosition.record_index at its end).
    last_record: int
    variants: int
    takers: set[Taker] = field(default_factory=set)

    @property
    def first_record(self) -> int:
        return self.start.record_index + 1


class JobLedger:
    def __init__(self, start: ReadPosition) -> None:
        # Only a ledger from the file's first record can tell what is missing from all of it.
        self.complete = start.lines == 0
        self._start = start
        self._open: set[Taker] = set()
        self.spans: list[LedgerSpan] = []

    def took(self, takers: Iterable[Taker]) -> None:
        """Backends that acknowledged a batch of the span being read."""
        self._open.update(takers)

    def close_span(self, end: ReadPosition) -> None:
        """The batch just published ended on a record boundary: the span ends there."""
        self.spans.append(
            LedgerSpan(self._start, end.record_index, end.variants - self._start.variants, self._open)
        )
        self._start, self._open = end, set()

    def lost(self, outages: Callable[[str], int]) -> list[LedgerSpan]:
        """Spans a backend took before it was declared down (again), in file order."""
        return [span for span in self.spans if any(outages(name) > seen for name, seen in span.takers)]

    @staticmethod
    def retaken(spans: Iterable[LedgerSpan], takers: set[Taker]) -> None:
        """The spans were published again and acknowledged by these backends."""
        for span in spans:
            span.takers = set(takers)
