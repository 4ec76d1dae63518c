"""What keeps the writer's memory down while LanceDB compacts, on real stores in a temporary directory.

Lance's scans (compaction's above all) read ahead up to 2 GiB by default, sized for object storage;
a local store bounds that unless the operator chose a size. And the graph's write-ahead log, which
the graph engine also keeps in memory until a checkpoint, is folded into its file before every
compaction rather than held through it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from vcf_agent.bus import open_bus
from vcf_agent.config import Settings
from vcf_agent.localdev import free_port
from vcf_agent.services import writer
from vcf_agent.services.writer import LanceStore, StoreLocation, StoreUnavailableError
from vcf_agent.services.writer._graph_store import GraphStore
from vcf_agent.services.writer._lance_store import (
    LANCE_SCAN_READ_AHEAD_VARIABLE,
    LOCAL_SCAN_READ_AHEAD_BYTES,
    CompactionPolicy,
)

from ._writes import make_write


@pytest.fixture
def read_ahead_unset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The variable unset for the test and restored after it (set first, so that undoing removes it)."""
    monkeypatch.setenv(LANCE_SCAN_READ_AHEAD_VARIABLE, "unset by the fixture")
    monkeypatch.delenv(LANCE_SCAN_READ_AHEAD_VARIABLE)
    yield


def test_a_local_store_bounds_lances_scan_read_ahead(tmp_path: Path, read_ahead_unset: None) -> None:
    store = LanceStore(tmp_path / "lance")
    store.open()
    store.close()
    assert (
        os.environ[LANCE_SCAN_READ_AHEAD_VARIABLE]
        == str(16 * 1024 * 1024)
        == str(LOCAL_SCAN_READ_AHEAD_BYTES)
    )


def test_a_read_ahead_the_operator_set_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LANCE_SCAN_READ_AHEAD_VARIABLE, str(64 << 20))
    store = LanceStore(tmp_path / "lance")
    store.open()
    store.close()
    assert os.environ[LANCE_SCAN_READ_AHEAD_VARIABLE] == str(64 << 20)


def test_an_object_store_keeps_lances_read_ahead(read_ahead_unset: None) -> None:
    """Deep read-ahead is what keeps object storage busy: an s3:// store leaves Lance's default.

    The endpoint is a closed local port, so opening fails at once; the variable is decided before.
    """
    options = {
        "aws_endpoint": f"http://127.0.0.1:{free_port()}",
        "allow_http": "true",
        "aws_access_key_id": "unused",
        "aws_secret_access_key": "unused",
        "aws_region": "us-east-1",
        "client_max_retries": "0",
        "connect_timeout": "1s",
    }
    store = LanceStore(StoreLocation("s3://bucket/prefix", options))
    with pytest.raises(StoreUnavailableError):
        store.open()
    assert LANCE_SCAN_READ_AHEAD_VARIABLE not in os.environ


def test_the_hook_runs_before_the_tables_are_compacted(tmp_path: Path) -> None:
    graph = GraphStore(tmp_path / "graph.lbug", buffer_pool_bytes=256 << 20)
    seen_fragments: list[int] = []

    def before_compaction() -> None:
        seen_fragments.append(lance.fragments())
        graph.checkpoint_if_written()

    lance = LanceStore(
        tmp_path / "lance",
        compaction=CompactionPolicy(max_fragments=3),
        before_compaction=before_compaction,
    )
    graph.open()
    lance.open()
    try:
        for batch in range(3):
            writes = [make_write(batch * 10 + i) for i in range(10)]
            lance.write(writes, maybe_stored=graph.write(writes))
        # The third write compacted: the hook saw its three fragments, then they were merged.
        assert seen_fragments == [3]
        assert lance.fragments() == 1
    finally:
        lance.close()
        graph.close()


def test_the_writer_checkpoints_its_graph_before_every_compaction(tmp_path: Path) -> None:
    """The writer as `serve writer` builds it: compacting LanceDB first folds the graph's log."""
    parts = writer.build(Settings(data_dir=tmp_path), open_bus(f"embedded://{tmp_path / 'bus'}"))
    log = tmp_path / "writer" / "graph.lbug.wal"

    def logged() -> int:
        return log.stat().st_size if log.exists() else 0

    parts.graph.open()
    parts.lance.open()
    try:
        for batch in range(2):
            writes = [make_write(batch * 10 + i) for i in range(10)]
            parts.lance.write(writes, maybe_stored=parts.graph.write(writes))
            assert logged() > 0, "the batch is in the graph's log until a checkpoint"
            parts.lance.compact()
            assert logged() == 0, "LanceDB compacted with the graph's log still held"
        assert parts.graph.counts().variants == 20
    finally:
        parts.lance.close()
        parts.graph.close()
