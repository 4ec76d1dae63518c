"""VCF Analysis Agent: streaming VCF analysis over a durable message log."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One source for the version: pyproject.toml, read from the installed package's metadata.
    __version__ = version("vcf-analysis-agent")
except PackageNotFoundError:  # A source tree on sys.path that was never installed.
    __version__ = "0+unknown"
