# One image for every service; the command picks which one (`vcf-agent serve NAME`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY services ./services
COPY proto ./proto
RUN pip install --no-cache-dir .
ENV VCF_AGENT_DATA_DIR=/data VCF_AGENT_GRPC_HOST=0.0.0.0
EXPOSE 50051 8765
ENTRYPOINT ["vcf-agent", "--log-level", "INFO"]
