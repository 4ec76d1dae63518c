"""Both writer stores on fresh real files (LanceDB, LadybugDB), for any writer test that asks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vcf_agent.services.writer._graph_store import GraphStore
from vcf_agent.services.writer._lance_store import CompactionPolicy, LanceStore


@pytest.fixture
def lance(tmp_path: Path) -> Iterator[LanceStore]:
    store = LanceStore(tmp_path / "lance", compaction=CompactionPolicy(max_fragments=1000))
    store.open()
    yield store
    store.close()


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphStore]:
    store = GraphStore(tmp_path / "graph.lbug", buffer_pool_bytes=256 << 20)
    store.open()
    yield store
    store.close()
