"""The five VCF Analysis Agent services; each folder holds only its own code."""
