# One image for every service; the command picks which one (`vcf-agent serve NAME`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY services ./services
COPY proto ./proto
# Three hot paths are C extensions (ingest's record encoder, the router's local-provider wire
# reader and writer, the writer's row builder): a compiler for the build, removed after it.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV VCF_AGENT_DATA_DIR=/data VCF_AGENT_GRPC_HOST=0.0.0.0
EXPOSE 50051 8765
ENTRYPOINT ["vcf-agent", "--log-level", "INFO"]
