"""VCF Analysis Agent: streaming VCF analysis over a durable message log."""

__version__ = "0.1.0"
