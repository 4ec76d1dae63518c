"""`python -m vcf_agent` runs the `vcf-agent` command."""

from vcf_agent.app.cli import main

raise SystemExit(main())
