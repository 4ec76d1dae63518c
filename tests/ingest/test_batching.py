"""Batches close on size or on linger time, whichever comes first."""

from __future__ import annotations

from pathlib import Path

from vcf_agent.services.ingest._vcf_reader import VcfReader
from vcf_agent.synthetic_vcf import SyntheticVcfSpec, write_synthetic_vcf


def _sizes(path: Path, **kwargs: int) -> list[int]:
    with VcfReader(path, file_id="f", job_id="j", tenant_id="t", source_name="s", **kwargs) as reader:
        return [batch.variant_count for batch in reader.batches()]


def test_size_closes_batches_and_linger_bounds_their_age(tmp_path: Path) -> None:
    path = write_synthetic_vcf(tmp_path / "small.vcf", SyntheticVcfSpec(records=250, seed=3))
    assert _sizes(path, batch_size=100, linger_ms=60_000) == [100, 100, 50]
    # A zero linger closes a batch after every record: the latency bound wins over size.
    assert _sizes(path, batch_size=100, linger_ms=0) == [1] * 250
