"""Generated protobuf and gRPC code for the public vcf_agent.v1 APIs (do not edit; scripts/generate_proto.py)."""
