# syntax=docker/dockerfile:1
# One image for the five services; the command picks which one:
#   vcf-agent serve ingest|router|aggregator|writer|notifier --grpc-host 0.0.0.0 --grpc-port 50051
#
# BASE_IMAGE is any Debian bookworm image with Python 3.11 and its venv module. The default is the
# official image pinned by digest; tests build one from Debian packages (debootstrap) because they
# run where no registry is reachable. Both stages use the same base, so the virtual environment
# copied from the build stage finds the same interpreter at the same path.
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE_IMAGE} AS build
# The compiler builds three C extensions (ingest's record encoder, the router's local-provider wire
# reader and writer, the writer's row builder). Python's headers come with the official image; a
# Debian-built base needs python3-dev for them.
# DL3008: apt versions are those of the digest-pinned base's Debian release; pinning exact .deb
# versions would break the build whenever Debian's security archive replaces one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && if ! python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'; then \
        apt-get install -y --no-install-recommends python3-dev; fi \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/vcf-agent
ENV PATH=/opt/vcf-agent/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Dependencies first, from the hash-checked lock (scripts/lock-image-deps.py): a source change
# reuses this layer. A build behind a TLS-inspecting proxy passes its CA bundle as the secret
# `pip-ca` (podman/docker build --secret id=pip-ca,src=FILE); it is used for this step only and
# never stored in a layer.
COPY deploy/requirements.lock /tmp/requirements.lock
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && pip install --require-hashes --no-deps -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proto ./proto
COPY src ./src
# No index and no build isolation: every dependency and the build backend are already installed.
RUN pip install --no-index --no-deps --no-build-isolation . \
    && python -c 'import vcf_agent.services.ingest._record_encoder, vcf_agent.analysis._local_wire, vcf_agent.services.writer._row_builder'

FROM ${BASE_IMAGE}
# Set by the release build: the version, the commit and the repository it was built from.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="vcf-analysis-agent" \
      org.opencontainers.image.description="Streaming VCF analysis: ingest, router, aggregator, writer, notifier" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it and volumes can be prepared for it.
RUN groupadd --system --gid 10001 vcf-agent \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin vcf-agent \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/vcf-agent /opt/vcf-agent
# The root filesystem can be read-only: bytecode was compiled at install, and the only writable
# paths are /data (stores, embedded log, flags) and the runtime's /tmp.
ENV PATH=/opt/vcf-agent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VCF_AGENT_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# gRPC control API, the notifier's WebSocket, and the metrics port reserved for /metrics.
EXPOSE 50051 8765 9464
ENTRYPOINT ["vcf-agent"]
CMD ["--help"]
