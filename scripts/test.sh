#!/usr/bin/env bash
# The test command (README.md): every test in the workspace, against the Docker
# engine and moto that .ci/run starts (AWS_ENDPOINT_URL), as root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
if [ -x scripts/check-infra.sh ]; then
  bash scripts/check-infra.sh
fi
