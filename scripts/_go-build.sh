# Sourced (not run) by the install scripts that build tools with the machine's Go from the Go
# module proxy: one copy of the toolchain check and of the cached, locked build.
# The caller has done `cd` to the checkout root; messages name the calling script.

# have_go WHAT: true when a Go toolchain is on PATH; otherwise says WHAT is not installed and is false.
have_go() {
    command -v go >/dev/null 2>&1 && return 0
    echo "$(basename "$0"): no Go toolchain: $1" >&2
    return 1
}

# cached_go_build NAME VERSION BUILD: NAME built once into
# ${XDG_CACHE_HOME:-~/.cache}/vcf-agent/NAME-VERSION/NAME (shared by all checkouts) and linked into
# .venv/bin/NAME. BUILD is a function run in a scratch directory that writes the executable to the
# path given as its argument. A file lock serialises installers running at once, and the binary
# only appears (by rename) once built, so a failed or interrupted build is tried again next time.
cached_go_build() {
    local name=$1 version=$2 build=$3
    local cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/vcf-agent/$name-$version"
    local binary="$cache_dir/$name"
    if [ ! -x "$binary" ] && have_go "$name not built"; then
        mkdir -p "$cache_dir"
        (
            flock 9
            if [ ! -x "$binary" ]; then
                scratch="$(mktemp -d)"
                trap 'rm -rf "$scratch"' EXIT
                cd "$scratch"
                "$build" "$binary.partial"
                mv "$binary.partial" "$binary"
            fi
        ) 9>"$cache_dir/.lock"
    fi
    if [ -x "$binary" ] && [ -d .venv/bin ]; then
        ln -sf "$binary" ".venv/bin/$name"
    fi
}
