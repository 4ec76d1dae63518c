#!/usr/bin/env bash
# Install everything, then analyse the bundled example VCF with all five services
# in one process on the embedded log (no server needed). Extra args go to `vcf-agent run`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/vcf-agent run "$@"
