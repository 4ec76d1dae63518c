"""Stream bus: one interface over embedded, memory, Kafka, Iggy and failover backends."""

from vcf_agent.bus._base import (
    Bus,
    BusError,
    BusUnavailableError,
    Consumer,
    OutgoingMessage,
    Partitioner,
    PartitionLag,
    PublishedPosition,
    Record,
    StartPosition,
    StreamSpec,
    TopicPartition,
    keep_for_next_join,
    partition_for_key,
)
from vcf_agent.bus._failover import BackendLag, BackendState, FailoverBus, FailoverRecord
from vcf_agent.bus._url import BUS_SCHEMES, open_bus

__all__ = [
    "BUS_SCHEMES",
    "BackendLag",
    "BackendState",
    "Bus",
    "BusError",
    "BusUnavailableError",
    "Consumer",
    "FailoverBus",
    "FailoverRecord",
    "OutgoingMessage",
    "PartitionLag",
    "Partitioner",
    "PublishedPosition",
    "Record",
    "StartPosition",
    "StreamSpec",
    "TopicPartition",
    "keep_for_next_join",
    "open_bus",
    "partition_for_key",
]
