"""Session-wide fixtures: real servers are started once per test session."""

pytest_plugins = [
    "tests.fixtures.kafka_broker",
    "tests.fixtures.iggy_server",
    "tests.fixtures.aiokafka_leaks",
]
