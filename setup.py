"""Builds the compiled VCF record encoder; everything else is declared in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vcf_agent.services.ingest._record_encoder",
            sources=["services/ingest/_record_encoder.c"],
            extra_compile_args=[
                "-O3",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
            ],
        )
    ]
)
