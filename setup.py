"""Builds the compiled ingest encoder, writer row builder and router wire format; everything else is
in pyproject.toml. The two wire readers share src/vcf_agent/schema/_wire.h."""

from setuptools import Extension, setup

_WIRE = ["src/vcf_agent/schema"]
_FLAGS = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(
            "vcf_agent.services.ingest._record_encoder",
            sources=["src/vcf_agent/services/ingest/_record_encoder.c"],
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "vcf_agent.services.writer._row_builder",
            sources=["src/vcf_agent/services/writer/_row_builder.c"],
            include_dirs=_WIRE,
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "vcf_agent.analysis._local_wire",
            sources=["src/vcf_agent/analysis/_local_wire.c"],
            include_dirs=_WIRE,
            extra_compile_args=_FLAGS,
        ),
    ]
)
