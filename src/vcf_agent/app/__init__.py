"""The command layer: `vcf-agent` and its subcommands, which compose the services into processes."""
