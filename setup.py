"""Builds the compiled ingest encoder, writer row builder and router wire format; everything else is
in pyproject.toml."""

from setuptools import Extension, setup

_FLAGS = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(
            "vcf_agent.services.ingest._record_encoder",
            sources=["services/ingest/_record_encoder.c"],
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "vcf_agent.services.writer._row_builder",
            sources=["services/writer/_row_builder.c"],
            extra_compile_args=_FLAGS,
        ),
        Extension(
            "vcf_agent.services.router._local_wire",
            sources=["services/router/_local_wire.c"],
            extra_compile_args=_FLAGS,
        ),
    ]
)
