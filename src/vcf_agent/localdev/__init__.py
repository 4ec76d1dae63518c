"""Local development servers (Kafka broker, Iggy server) for tests, benchmarks and `vcf-agent dev`."""

from vcf_agent.localdev._iggy_server import IggyServerError, LocalIggyServer, find_iggy_server
from vcf_agent.localdev._kafka_broker import KafkaInstallError, LocalKafkaBroker, install_kafka

__all__ = [
    "IggyServerError",
    "KafkaInstallError",
    "LocalIggyServer",
    "LocalKafkaBroker",
    "find_iggy_server",
    "install_kafka",
]
