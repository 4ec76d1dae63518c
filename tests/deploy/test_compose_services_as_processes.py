"""Each compose stack's five services, run as local processes with the file's own commands and
environment against a real local Kafka (and Iggy where a server binary is available), become
SERVING on the health names the probes ask for and stop cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import _compose_processes as processes
from tests.deploy._deploy_files import (
    TEST_ENV,
    compose_services,
    filled_env_file,
    liveness_health_name,
    load_compose,
)
from tests.fixtures.iggy_server import NO_IGGY_REASON
from vcf_agent.localdev import LocalIggyServer, find_iggy_server


def _run_stack(profile: str, where: processes.Endpoints, tmp_path: Path) -> None:
    project = load_compose(filled_env_file(tmp_path), profile)
    services = compose_services(project)
    streams = processes.unique_streams()
    # Readiness asks the overall health (""); liveness the name set in k8s/base/liveness-probe.yaml.
    health_names = sorted({"", liveness_health_name()})
    started: list[processes.RunningService] = []
    try:
        for name, service in services.items():
            started.append(processes.start(name, service, where, streams))
        for running in started:
            statuses = processes.wait_serving(running.grpc, health_names)
            assert set(statuses.values()) == {"SERVING"}, f"{running.name}: {statuses}\n{running.log()}"
    finally:
        codes = {s.name: processes.stop(s) for s in reversed(started)}
    assert codes == dict.fromkeys(services, 0)


def test_embedded_stack_commands_serve_as_local_processes(tmp_path: Path) -> None:
    _run_stack("embedded", processes.Endpoints(tmp_path / "data"), tmp_path)


@pytest.mark.kafka
def test_kafka_stack_commands_serve_as_local_processes(tmp_path: Path, kafka_bootstrap: str) -> None:
    _run_stack("kafka", processes.Endpoints(tmp_path / "data", kafka=kafka_bootstrap), tmp_path)


@pytest.mark.kafka
@pytest.mark.iggy
async def test_failover_stack_commands_serve_as_local_processes(tmp_path: Path, kafka_bootstrap: str) -> None:
    binary = find_iggy_server()
    if binary is None:
        pytest.skip(NO_IGGY_REASON)
    # Iggy's root user as the compose file creates it, from the env file's credentials.
    async with LocalIggyServer(
        binary, username=TEST_ENV["IGGY_ROOT_USERNAME"], password=TEST_ENV["IGGY_ROOT_PASSWORD"]
    ) as iggy:
        where = processes.Endpoints(tmp_path / "data", kafka=kafka_bootstrap, iggy=iggy.address)
        _run_stack("failover", where, tmp_path)
