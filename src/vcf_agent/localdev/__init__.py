"""Local development servers (Kafka broker, Iggy server, S3 server, simulated LLM vendors) for tests,
benchmarks and `vcf-agent dev`."""

from vcf_agent.localdev._child_process import free_port, free_ports
from vcf_agent.localdev._iggy_server import IggyServerError, LocalIggyServer, find_iggy_server
from vcf_agent.localdev._kafka_broker import KafkaInstallError, LocalKafkaBroker, install_kafka
from vcf_agent.localdev._llm_vendors import (
    SIMULATED_ANSWER,
    SIMULATED_API_KEY,
    Reply,
    Script,
    Seen,
    SimulatedVendor,
    Vendor,
    answering,
)
from vcf_agent.localdev._s3_server import LocalS3Server, S3ServerError, find_s3_server
from vcf_agent.localdev._service_processes import (
    ServiceProcess,
    ServiceStartError,
    running_pipeline,
    start_service,
    stop_service,
)
from vcf_agent.localdev._small_disk import SmallDisk, SmallDiskUnavailableError

__all__ = [
    "SIMULATED_ANSWER",
    "SIMULATED_API_KEY",
    "IggyServerError",
    "KafkaInstallError",
    "LocalIggyServer",
    "LocalKafkaBroker",
    "LocalS3Server",
    "Reply",
    "S3ServerError",
    "Script",
    "Seen",
    "ServiceProcess",
    "ServiceStartError",
    "SimulatedVendor",
    "SmallDisk",
    "SmallDiskUnavailableError",
    "Vendor",
    "answering",
    "find_iggy_server",
    "find_s3_server",
    "free_port",
    "free_ports",
    "install_kafka",
    "running_pipeline",
    "start_service",
    "stop_service",
]
