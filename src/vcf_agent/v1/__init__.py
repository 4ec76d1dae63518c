"""Generated protobuf and gRPC code for vcf_agent.v1 (do not edit)."""
