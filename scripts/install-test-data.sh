#!/usr/bin/env bash
# Real VCFs that tests read (tests/router/test_annotated_files.py, tests/ingest/test_htslib_agreement.py), unpacked from pinned
# Debian packages into .venv/test-data/debian (no package is installed):
#   python3-cyvcf2  cyvcf2's test files: VEP CSQ, SnpEff ANN and vcfanno population keys
#   vcfanno-examples  vcfanno's examples: an ExAC r0.3 sites extract with VEP CSQ population fields
#   htslib-test       htslib's own test VCFs (a bcftools gVCF, 64-bit positions, edge cases)
# Needs apt-get and dpkg-deb (Debian/Ubuntu); elsewhere the tests that need the files skip.
set -euo pipefail
cd "$(dirname "$0")/.."

target=.venv/test-data/debian
packages=(python3-cyvcf2=0.30.18-1+b2 vcfanno-examples=0.3.5+ds-1 htslib-test=1.16+ds-3)
stamp="$target/.installed-$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "install-test-data.sh: no apt-get/dpkg-deb here; annotated-file tests will skip" >&2
    exit 0
fi
mkdir -p "$target/debs"
download() { (cd "$target/debs" && apt-get download -q "${packages[@]}" 2>/dev/null); }
if ! download; then
    # A fresh machine has no package lists yet.
    apt-get update -qq >/dev/null 2>&1 || true
    download || { echo "install-test-data.sh: could not download ${packages[*]}" >&2; exit 0; }
fi
for deb in "$target"/debs/*.deb; do
    dpkg-deb -x "$deb" "$target"
done
rm -rf "$target/debs" "$target"/.installed-*
touch "$stamp"
echo "annotated test VCFs in $target"
