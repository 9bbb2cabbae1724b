#!/usr/bin/env bash
# The README's first command: the demo campaign end to end on this machine. Builds what the demo
# needs (the bare osemgrep and the demo's v2 images, when a Docker daemon answers; cached by
# content hash, seconds when already built), builds `ase` (release), then runs `ase run`: an
# embedded coordinator and a local worker over mutual TLS on loopback, the demo dataset on v1
# (semgrep) and v2 (Docker), three models, 3 rounds, and a score table at the end.
# Arguments go to `ase run` (e.g. --data DIR). Running it again resumes instead of redoing.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker info >/dev/null 2>&1; then
  deploy/images/build.sh sast demo
else
  echo "note: no Docker daemon answers: the v2 demo tasks will fail with the reason; v1 still runs" >&2
  # The bare osemgrep still comes from the semgrep wheel (no Docker needed for that part).
  deploy/images/build.sh osemgrep
fi

cargo build --release -p ase
exec "${CARGO_TARGET_DIR:-target}/release/ase" run "$@"
