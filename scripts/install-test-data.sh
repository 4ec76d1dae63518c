#!/usr/bin/env bash
# Real VCFs (and the tool to make one) that tests read (tests/router/test_annotated_files.py,
# tests/ingest/test_htslib_agreement.py), unpacked from pinned public packages into .venv/test-data
# (nothing is installed system-wide):
#   Debian binary packages, into .venv/test-data/debian:
#     python3-cyvcf2    cyvcf2's test files: VEP CSQ, SnpEff ANN and vcfanno population keys
#     vcfanno-examples  vcfanno's examples: an ExAC r0.3 sites extract with VEP CSQ population fields,
#                       a gnomAD r2.0 genomes extract with a multi-allelic VEP CSQ record (ALLELE_NUM)
#     htslib-test       htslib's own test VCFs (a bcftools gVCF, 64-bit positions, edge cases)
#     bcftools, libhts3, libhtscodecs2  bcftools 1.16 and the libraries it loads, run by the tests
#   Debian source package bcftools (its test inputs for 'bcftools csq': a GFF3, a FASTA and VCFs
#     of compound changes; and three test VCFs htslib writes or reads as it finds them: FORMAT '.',
#     INFO ending in ';', an ALT listing one allele twice), into .venv/test-data/debian-source
#   PyPI wheel scout-browser (its demo: a MIP rare-disease VCF annotated with ClinVar CLNSIG/
#     CLNREVSTAT, VEP CSQ and population frequencies), into .venv/test-data/pypi
# Needs apt-get and dpkg-deb (Debian/Ubuntu) for the Debian parts; whatever cannot be fetched is
# reported and its tests skip naming the package.
set -euo pipefail
cd "$(dirname "$0")/.."

root=.venv/test-data
target=$root/debian
packages=(
    python3-cyvcf2=0.30.18-1+b2 vcfanno-examples=0.3.5+ds-1 htslib-test=1.16+ds-3
    bcftools=1.16-1 libhts3=1.16+ds-3 libhtscodecs2=1.3.0-4
)
source_package=bcftools=1.16-1
source_members=(
    bcftools-1.16/test/csq/ENST00000379416 bcftools-1.16/test/gtcheck.5.vcf
    bcftools-1.16/test/filter-missing-floats.vcf bcftools-1.16/test/many.alleles.vcf
)
wheel=scout-browser==4.115.2
wheel_member=scout/demo/643594.clinical.vcf.gz
stamp="$root/.installed-$(printf '%s\n' "${packages[@]}" "$source_package" "${source_members[@]}" "$wheel" \
    | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
mkdir -p "$root"
complete=1

# PyPI: the wheel is a zip; only the one demo file is kept.
wheels=$(mktemp -d)
if .venv/bin/python -m pip download --quiet --no-deps --only-binary :all: -d "$wheels" "$wheel"; then
    .venv/bin/python - "$wheels" "$root/pypi/${wheel/==/-}" "$wheel_member" <<'EOF'
import sys, zipfile
from pathlib import Path
(archive,) = Path(sys.argv[1]).glob("*.whl")
with zipfile.ZipFile(archive) as wheel:
    wheel.extract(sys.argv[3], sys.argv[2])
EOF
else
    echo "install-test-data.sh: could not download $wheel from PyPI" >&2
    complete=0
fi
rm -rf "$wheels"

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "install-test-data.sh: no apt-get/dpkg-deb here; tests of Debian-packaged files will skip" >&2
    exit 0
fi
mkdir -p "$target/debs"
download() { (cd "$target/debs" && apt-get download -q "${packages[@]}" 2>/dev/null); }
if ! download; then
    # A fresh machine has no package lists yet.
    apt-get update -qq >/dev/null 2>&1 || true
    download || { echo "install-test-data.sh: could not download ${packages[*]}" >&2; complete=0; }
fi
for deb in "$target"/debs/*.deb; do
    [ -e "$deb" ] && dpkg-deb -x "$deb" "$target"
done
rm -rf "$target/debs"

# Source packages need deb-src entries, which the machine's apt sources may lack: the same
# archives as its binary sources, with package lists of their own, leave its configuration alone.
apt_dir=$(mktemp -d)
mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/download"
for list in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$list" ] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$list" >>"$apt_dir/sources/binary-as-source.list"
done
for sources in /etc/apt/sources.list.d/*.sources; do
    [ -f "$sources" ] && sed 's/^Types:.*/Types: deb-src/' "$sources" >"$apt_dir/sources/$(basename "$sources")"
done
apt_src=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources"
    -o "Dir::State::Lists=$apt_dir/lists")
if apt-get "${apt_src[@]}" update -qq >/dev/null 2>&1 \
    && (cd "$apt_dir/download" && apt-get "${apt_src[@]}" source --download-only -qq "$source_package" >/dev/null 2>&1); then
    mkdir -p "$root/debian-source"
    tar -xzf "$apt_dir"/download/*.orig.tar.gz -C "$root/debian-source" "${source_members[@]}"
else
    echo "install-test-data.sh: could not download the Debian source package $source_package" >&2
    complete=0
fi
rm -rf "$apt_dir"

# Only a complete set is stamped, so a failed fetch is retried by the next install.
if [ "$complete" = 1 ]; then
    rm -f "$root"/.installed-* "$target"/.installed-*
    touch "$stamp"
fi
echo "annotated test files in $root"
