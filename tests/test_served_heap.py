"""A served service's start-up objects are frozen out of garbage collection (runner.freeze_startup_heap)."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import pytest

from vcf_agent.app.pipeline import service_builder
from vcf_agent.config import Settings
from vcf_agent.runner import ServiceHost, ShutdownDeadline, serve


async def test_a_served_service_leaves_what_it_held_at_start_out_of_collections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve leaves its shutdown deadline running to guard the process's exit; this process goes on.
    monkeypatch.setattr(ShutdownDeadline, "start", lambda self: None)
    settings = Settings(data_dir=tmp_path, bus_url=f"embedded://{tmp_path / 'bus'}")
    seen: list[tuple[int, int]] = []

    def ready(host: ServiceHost) -> None:
        # What a full collection walks now, against what the frozen generation holds.
        seen.append((len(gc.get_objects()), gc.get_freeze_count()))
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler: an orderly shutdown

    gc.unfreeze()
    try:
        await serve("notifier", service_builder("notifier"), settings, ready=ready)
    finally:
        gc.unfreeze()
    [(tracked, frozen)] = seen
    # The interpreter, the imported services and the started notifier: tens of thousands of
    # objects no collection walks any more; what is left to walk is what was made since.
    assert frozen > 50_000
    assert tracked < frozen / 10
