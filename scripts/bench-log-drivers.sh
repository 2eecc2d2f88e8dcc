#!/usr/bin/env bash
# Benchmark: dockerd's own CPU per million container log lines, per log driver,
# with no shipper reading them: the floor under any shipper that reads what
# Docker wrote (issue 20's cost figure counts dockerd). Not a timed test.
#
#   sudo bash scripts/bench-log-drivers.sh [LINES_PER_CONTAINER] [CONTAINERS] [DRIVER...]
#   e.g. sudo bash scripts/bench-log-drivers.sh 200000 8 json-file local
#
# Each container is the fake code-server printing LINES lines of ~100 bytes at
# start (as in scripts/bench-logs.sh). dockerd's CPU ticks are taken from
# before the containers are created until it is idle again; the same run with
# 0 lines (create, start, remove only) is subtracted.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${1:-200000}
K=${2:-8}
shift 2 || true
DRIVERS=("${@:-json-file local}")
# shellcheck disable=SC2206
DRIVERS=(${DRIVERS[*]})
IMAGE=${TEST_IMAGE:-csagent-test/code-server:latest}
PAD=$(printf 'x%.0s' $(seq 1 88))
HZ=$(getconf CLK_TCK)
dockerd_pid=$(pgrep -xo dockerd)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cleanup() { docker ps -aq --filter label=csagent.bench-drivers=1 | xargs -r docker rm -f >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-test-image.sh

# run DRIVER LINES -> dockerd ticks from create to idle, containers removed
run() {
  local drv=$1 n=$2 i t0 quiet=0 prev now
  t0=$(ticks "$dockerd_pid")
  for i in $(seq 1 "$K"); do
    docker run -d --label csagent.bench-drivers=1 --log-driver "$drv" \
      -e FAKE_PRINT_LINES="$n" -e FAKE_PRINT_PREFIX="d$i-$PAD-" "$IMAGE" >/dev/null
  done
  # Idle again: two quiet seconds in a row (under 2 ticks each).
  prev=$(ticks "$dockerd_pid")
  while [ "$quiet" -lt 2 ]; do
    sleep 1
    now=$(ticks "$dockerd_pid")
    if [ $(( now - prev )) -lt 2 ]; then quiet=$(( quiet + 1 )); else quiet=0; fi
    prev=$now
  done
  cleanup
  echo $(( prev - t0 ))
}

echo "| driver | containers × lines | dockerd CPU-s | of which create/start/remove | CPU-s per M lines |"
echo "|---|---|---|---|---|"
for drv in "${DRIVERS[@]}"; do
  base=$(run "$drv" 0)
  full=$(run "$drv" "$LINES")
  awk -v d="$drv" -v k="$K" -v n="$LINES" -v f="$full" -v b="$base" -v hz="$HZ" \
    'BEGIN{printf "| %s | %d × %d | %.2f | %.2f | %.2f |\n", d, k, n, f/hz, b/hz, (f-b)/hz/(k*n/1000000)}'
done
