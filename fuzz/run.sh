#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, from the committed seeds, and fails on any crash.
#
# Usage: fuzz/run.sh SECONDS
# New inputs go to fuzz/corpus/<target>/ (not committed); crashes to fuzz/artifacts/<target>/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); uses the nightly toolchain if
# there is one, else the default toolchain with RUSTC_BOOTSTRAP=1.
set -uo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS}
case $seconds in
    '' | *[!0-9]*) echo "SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 2
fi
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

targets=$("${fuzz[@]}" list) || exit 2
if [ -z "$targets" ]; then
    echo "no fuzz targets found" >&2
    exit 2
fi

failed=()
for target in $targets; do
    if [ -z "$(ls -A "fuzz/seeds/$target" 2>/dev/null)" ]; then
        echo "fuzz/seeds/$target is missing or empty" >&2
        failed+=("$target (no seeds)")
        continue
    fi
    mkdir -p "fuzz/corpus/$target"
    echo "== $target: ${seconds}s"
    if ! "${fuzz[@]}" run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing passed: $(echo $targets)"
