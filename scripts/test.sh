#!/usr/bin/env bash
# The test command (README.md): every test in the workspace against the Docker
# engine and moto that .ci/run starts (AWS_ENDPOINT_URL), as root; then the
# CloudFormation checks and the .deb checks. The fault-injection tests
# (tests/faults.rs and others) add their measured rows to a table printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CSAGENT_FAULT_REPORT=${CSAGENT_FAULT_REPORT:-${CARGO_TARGET_DIR:-target}/fault-report.md}
mkdir -p "$(dirname "$CSAGENT_FAULT_REPORT")"
: > "$CSAGENT_FAULT_REPORT"
cargo test --workspace --locked "$@"
bash scripts/check-infra.sh
if [ -f scripts/test-deb.sh ]; then
  bash scripts/test-deb.sh
fi
if [ -s "$CSAGENT_FAULT_REPORT" ]; then
  echo
  echo "Fault injection (docs/reliability.md):"
  echo "| fault | log lines | lost | duplicated | files lost | needless restarts | back to converged |"
  echo "|---|---|---|---|---|---|---|"
  sort "$CSAGENT_FAULT_REPORT"
fi
