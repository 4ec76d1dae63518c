"""Local development servers (Kafka broker, Iggy server) for tests, benchmarks and `vcf-agent dev`."""
