#!/usr/bin/env bash
# The test command (README.md): every test in the workspace against the Docker
# engine and moto that .ci/run starts (AWS_ENDPOINT_URL), as root; then the
# CloudFormation checks and the .deb checks.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
bash scripts/check-infra.sh
if [ -f scripts/test-deb.sh ]; then
  bash scripts/test-deb.sh
fi
