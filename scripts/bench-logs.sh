#!/usr/bin/env bash
# Benchmark: container logs shipped to a local CloudWatch Logs endpoint by
# csagent's shipper and, in the same run, by Docker's awslogs driver.
# Results go in docs/benchmarks.md ("Logs"); this is not a timed test.
#
#   sudo bash scripts/bench-logs.sh [LINES_PER_CONTAINER] [CONTAINER_COUNTS...]
#   e.g. sudo bash scripts/bench-logs.sh 100000 1 8
#   AGENT_BIN=path/to/ship_logs sudo -E bash scripts/bench-logs.sh ...  (a given build)
#   AWSLOGS=0 ...: csagent's shipper only (to compare two builds of it)
#   BENCH_TIMELINE=1 ...: also print when each container's log was last written and
#     when each group's first and last put arrived (seconds from the first docker run)
#
# Needs root, a running dockerd, the test image (scripts/build-test-image.sh) and
# python3. Each container is the fake code-server printing LINES numbered lines
# of ~100 bytes as fast as it can at start; we time until the endpoint has them
# all. The endpoint is scripts/bench-logs-sink.py (moto stores and re-sorts every
# event and is the bottleneck at these rates). csagent runs as the `ship_logs`
# example (the shipper alone, release build); its CPU and peak RSS are sampled
# from /proc. The awslogs driver runs inside dockerd, so for it dockerd's CPU
# and RSS growth are reported; dockerd's CPU is reported for both runs (with
# csagent it writes json-file and serves the logs API).
#
# The table also gives the endpoint's CPU, and shipper + dockerd CPU-seconds per
# million lines (the issue's cost figure). AGENT_BIN=path runs that ship_logs
# binary instead of building this tree's (to compare builds of other commits).
#
# awslogs needs credentials in dockerd's environment or ~/.aws/credentials of
# dockerd's HOME; when neither exists, a dummy /root/.aws/credentials is written
# for the run and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

LINES=${1:-100000}
shift || true
COUNTS=("${@:-1 8}")
# shellcheck disable=SC2206
COUNTS=(${COUNTS[*]})
IMAGE=${TEST_IMAGE:-csagent-test/code-server:latest}
REGION=ap-southeast-7
TARGET_DIR=${CARGO_TARGET_DIR:-target}
PAD=$(printf 'x%.0s' $(seq 1 88))   # line = "bNNN-<88 x>-<i>" ≈ 100 bytes
HZ=$(getconf CLK_TCK)
work=$(mktemp -d)
sink_pid="" agent_pid="" made_creds=""

cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
  docker ps -aq --filter label=csagent.bench=1 | xargs -r docker rm -f >/dev/null 2>&1 || true
  [ -n "$made_creds" ] && rm -f /root/.aws/credentials && rmdir /root/.aws 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-test-image.sh
# AGENT_BIN=path measures that ship_logs binary instead (e.g. one built with another
# profile, to compare builds).
if [ -n "${AGENT_BIN:-}" ]; then
  agent_bin=$AGENT_BIN
else
  cargo build -q --release --example ship_logs
  agent_bin="$TARGET_DIR/release/examples/ship_logs"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 scripts/bench-logs-sink.py "$port" & sink_pid=$!
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
endpoint="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=$REGION

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
dockerd_pid=$(pgrep -xo dockerd)

# events(prefix) — events received in groups whose name starts with prefix
events() {
  curl -fs "$endpoint/" | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(g['events'] for n,g in d.items() if n.startswith('$1')))"
}
bytes_of() {
  curl -fs "$endpoint/" | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(g['bytes'] for n,g in d.items() if n.startswith('$1')))"
}
max_call() {
  curl -fs "$endpoint/" | python3 -c "import json,sys; d=json.load(sys.stdin); g=[g for n,g in d.items() if n.startswith('$1')]; print(max(x['max_call_events'] for x in g), max(x['max_call_bytes'] for x in g))"
}

# wait_all PREFIX WANT PID FIRST_RUN — polls until WANT events arrived; samples
# RSS of PID; prints "seconds max_rss_kib seconds_since_FIRST_RUN". The first
# figure (the issue's lines/s) counts from when the last `docker run` returned.
wait_all() {
  local prefix=$1 want=$2 pid=$3 first=$4 t0 max=0 r got
  t0=$(date +%s.%N)
  while :; do
    got=$(events "$prefix")
    r=$(rss_kib "$pid"); [ "$r" -gt "$max" ] && max=$r
    [ "$got" -ge "$want" ] && break
    if awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{exit !(a-b>900)}'; then echo "timeout: $got of $want" >&2; break; fi
    sleep 0.2
  done
  local t1; t1=$(date +%s.%N)
  echo "$(awk -v a="$t1" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') $max $(awk -v a="$t1" -v b="$first" 'BEGIN{printf "%.2f", a-b}')"
}

results=()
pct() { awk -v t="$1" -v s="$2" -v hz="$HZ" 'BEGIN{printf "%.0f%%", 100*t/hz/s}'; }
report() { # name containers seconds events bytes shipper_cpu shipper_rss dockerd_ticks dockerd_rss_growth_kib maxcall shipper_ticks sink_ticks seconds_from_first_run
  local lps mbs per_m
  lps=$(awk -v e="$4" -v s="$3" 'BEGIN{printf "%.0f", e/s}')
  mbs=$(awk -v b="$5" -v s="$3" 'BEGIN{printf "%.1f", b/s/1048576}')
  per_m=$(awk -v a="${11}" -v d="$8" -v e="$4" -v hz="$HZ" 'BEGIN{printf "%.2f", (a+d)/hz/(e/1000000)}')
  results+=("| $1 | $2 | $4 | $3 | $lps | ${13} | $mbs | $6 | $7 | $(pct "$8" "$3") | $per_m | $(pct "${12}" "$3") | $(( $9 / 1024 )) MiB | ${10} |")
}

# timeline K PROJ FIRST RUNS_DONE — (BENCH_TIMELINE=1) seconds from the first docker
# run: when the runs were done, when each container's json-file was last written, and
# each log group's first and last put at the endpoint.
timeline() {
  local k=$1 proj=$2 first=$3 runs=$4 i lp
  echo "timeline (s from the first docker run): runs done $(awk -v a="$runs" -v b="$first" 'BEGIN{printf "%.2f", a-b}')" >&2
  for i in $(seq 1 "$k"); do
    lp=$(docker inspect -f '{{.LogPath}}' "code-server-b$k-$i-$proj")
    echo "  b$k-$i json-file last written $(awk -v a="$(stat -c %.9Y "$lp")" -v b="$first" 'BEGIN{printf "%.2f", a-b}')" >&2
  done
  curl -fs "$endpoint/" | python3 -c "import json,sys; d=json.load(sys.stdin); [print('  %s: %d puts, first %.2f, last %.2f' % (n.rsplit('/',1)[-1], g['calls'], g['first_put']-$first, g['last_put']-$first), file=sys.stderr) for n,g in sorted(d.items()) if n.startswith('/aws/ec2/$proj/')]"
}

run_csagent() {
  local k=$1 proj="bench$RANDOM$k" i devs=""
  for i in $(seq 1 "$k"); do devs+=$'[[developer]]\nname = "b'"$k-$i"$'"\n'; done
  mkdir -p "$work/$proj"
  cat > "$work/$proj/config.toml" <<EOC
project = "$proj"
region = "$REGION"
instance_id = "i-0000000000000be00"
[aws]
endpoint_url = "$endpoint"
[volume]
device = "/dev/null"
[agent]
state_dir = "$work/$proj/state"
log_level = "warn"
$devs
EOC
  "$agent_bin" --config "$work/$proj/config.toml" >"$work/$proj/status.json" 2>"$work/$proj/agent.log" & agent_pid=$!
  sleep 1
  local a0 d0 dr0 s0
  a0=$(ticks "$agent_pid"); d0=$(ticks "$dockerd_pid"); dr0=$(rss_kib "$dockerd_pid"); s0=$(ticks "$sink_pid")
  local first; first=$(date +%s.%N)
  for i in $(seq 1 "$k"); do
    docker run -d --name "code-server-b$k-$i-$proj" --label csagent.bench=1 \
      --label csagent.managed=true --label "csagent.project=$proj" --label "csagent.developer=b$k-$i" \
      -e FAKE_PRINT_LINES="$LINES" -e FAKE_PRINT_PREFIX="b$k-$i-$PAD-" "$IMAGE" >/dev/null
  done
  local t_runs; t_runs=$(date +%s.%N)
  local out secs rss total
  out=$(wait_all "/aws/ec2/$proj/" $(( k * (LINES + 1) )) "$agent_pid" "$first")
  read -r secs rss total <<<"$out"
  [ "${BENCH_TIMELINE:-0}" = 1 ] && timeline "$k" "$proj" "$first" "$t_runs"
  local a1 d1 dr1 s1
  a1=$(ticks "$agent_pid"); d1=$(ticks "$dockerd_pid"); dr1=$(rss_kib "$dockerd_pid"); s1=$(ticks "$sink_pid")
  report csagent "$k" "$secs" "$(events "/aws/ec2/$proj/")" "$(bytes_of "/aws/ec2/$proj/")" \
    "$(pct $(( a1 - a0 )) "$secs")" "$(( rss / 1024 )) MiB" $(( d1 - d0 )) $(( dr1 > dr0 ? dr1 - dr0 : 0 )) "$(max_call "/aws/ec2/$proj/")" \
    $(( a1 - a0 )) $(( s1 - s0 )) "$total"
  kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=""
  docker ps -aq --filter label=csagent.bench=1 | xargs -r docker rm -f >/dev/null
}

run_awslogs() {
  local k=$1 proj="bench$RANDOM$k" i
  if [ ! -e /root/.aws/credentials ] && ! tr '\0' '\n' <"/proc/$dockerd_pid/environ" | grep -q '^AWS_ACCESS_KEY_ID='; then
    mkdir -p /root/.aws
    printf '[default]\naws_access_key_id = bench\naws_secret_access_key = bench\n' > /root/.aws/credentials
    made_creds=1
  fi
  local d0 dr0 s0 max=0
  d0=$(ticks "$dockerd_pid"); dr0=$(rss_kib "$dockerd_pid"); s0=$(ticks "$sink_pid")
  local first; first=$(date +%s.%N)
  for i in $(seq 1 "$k"); do
    docker run -d --name "awslogs-$k-$i-$proj" --label csagent.bench=1 \
      --log-driver awslogs --log-opt awslogs-endpoint="$endpoint" --log-opt awslogs-region=$REGION \
      --log-opt awslogs-group="/bench/$proj/awslogs-$i" --log-opt awslogs-create-group=true \
      -e FAKE_PRINT_LINES="$LINES" -e FAKE_PRINT_PREFIX="a$k-$i-$PAD-" "$IMAGE" >/dev/null
  done
  local out secs rss total
  out=$(wait_all "/bench/$proj/" $(( k * (LINES + 1) )) "$dockerd_pid" "$first")
  read -r secs rss total <<<"$out"
  local d1 s1
  d1=$(ticks "$dockerd_pid"); s1=$(ticks "$sink_pid")
  report "awslogs driver" "$k" "$secs" "$(events "/bench/$proj/")" "$(bytes_of "/bench/$proj/")" \
    "(in dockerd)" "(in dockerd)" $(( d1 - d0 )) $(( rss > dr0 ? rss - dr0 : 0 )) "$(max_call "/bench/$proj/")" \
    0 $(( s1 - s0 )) "$total"
  docker ps -aq --filter label=csagent.bench=1 | xargs -r docker rm -f >/dev/null
}

for k in "${COUNTS[@]}"; do
  run_csagent "$k"
  [ "${AWSLOGS:-1}" = 0 ] || run_awslogs "$k"
done

echo
echo "lines per container: $LINES (~100 bytes each); machine: $(nproc) cores, $(free -g | awk '/^Mem/{print $2}') GiB"
echo "| shipper | containers | events | seconds | lines/s | seconds from the first docker run | MiB/s | shipper CPU | shipper peak RSS | dockerd CPU | CPU-s per M lines (shipper + dockerd) | endpoint CPU | dockerd RSS growth | largest call (events, bytes) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
