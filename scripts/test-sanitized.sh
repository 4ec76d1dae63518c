#!/usr/bin/env bash
# The compiled extensions under AddressSanitizer and UndefinedBehaviorSanitizer: builds them once
# with -fsanitize=address,undefined into a scratch copy of the package and runs the tests that
# drive the compiled code (the differential and fuzz tests) against that build, with the
# sanitizer runtime preloaded into Python. Any out-of-bounds access, use after free or undefined
# behaviour aborts the run. Extra pytest arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=.venv/bin/python
scratch=$(mktemp -d "${TMPDIR:-/tmp}/vcf-agent-asan.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# The package without its in-place builds, then the sanitized ones beside its sources.
mkdir -p "$scratch/src"
cp -r src/vcf_agent "$scratch/src/"
find "$scratch/src" -name '*.so' -delete
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
    "$PYTHON" setup.py -q build_ext --build-lib "$scratch/src" --build-temp "$scratch/build" --force \
    >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log" >&2; exit 1; }

# setup.py marks the extensions optional: a failed build is only a warning there, an error here.
modules=(
    vcf_agent.services.ingest._record_encoder
    vcf_agent.services.writer._row_builder
    vcf_agent.analysis._local_wire
)
asan=$(gcc -print-file-name=libasan.so)
export PYTHONPATH="$scratch/src" LD_PRELOAD="$asan" PYTHONMALLOC=malloc
# CPython's own allocations at exit are not leaks of ours.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
unset VCF_AGENT_NO_EXTENSIONS
"$PYTHON" - "$scratch" "${modules[@]}" <<'EOF'
import importlib, sys
scratch, names = sys.argv[1], sys.argv[2:]
for name in names:
    path = importlib.import_module(name).__file__ or ""
    if not path.startswith(scratch):
        sys.exit(f"test-sanitized.sh: {name} was loaded from {path}, not the sanitized build")
print("sanitized build:", ", ".join(names))
EOF
# The tests that reach the C paths; the row builder's under its compiled variant only, the local
# wire format's without the real-file runs (the same C paths as the random and fuzz cases, and
# slow under the sanitizers). The timeout allows for the sanitizers' slowdown; --capture=sys
# leaves file descriptor 2 alone, so a sanitizer's report reaches the log before it aborts.
run() { "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys --timeout=900 "$@"; }
run tests/ingest/test_record_encoder.py "$@"
run tests/writer/test_row_builder.py -k compiled "$@"
run tests/router/test_variant_reader.py -k "not real_files and not 1000_genomes" "$@"
run tests/aggregator/test_spliced_results.py "$@"
