#!/usr/bin/env bash
# The project's test command (the README's, and what .ci/run calls): build the `ase` binary, then
# the images the tests need when a Docker daemon answers (cached by content hash, seconds when already built), then run
# every test of the workspace. Tests that need Docker or semgrep and cannot find them fail under
# CI=true and say "skipped: <why>" elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

# The cross-process tests start the `ase` binary itself, and the cluster node image packs it:
# build it first.
cargo build -p ase
ase_bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/ase"

if [ -x deploy/images/build.sh ]; then
  if docker info >/dev/null 2>&1; then
    ASE_BIN="$ase_bin" deploy/images/build.sh
  else
    echo "note: no Docker daemon: images not built; Docker-backed tests will report themselves skipped" >&2
  fi
fi
cargo test --workspace --all-targets "$@"
