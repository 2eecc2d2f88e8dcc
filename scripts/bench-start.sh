#!/usr/bin/env bash
# Benchmark: agent start → 8 containers running and healthy (image present), then
# the agent's CPU and RSS while idle with 8 containers. Uses the demo's setup
# (scripts/demo.sh must have been run once; it is stopped and restarted here).
#   sudo bash scripts/bench-start.sh [--test-image] [idle-seconds]
# CSAGENT_BIN=path measures that binary instead of building the release one (to
# compare builds); the memory line splits RSS by mapping (from /proc/PID/smaps).
# BENCH_CONFIG=path another config; BENCH_TLS=1 through TLS (both below).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE_FLAG=""
[ "${1:-}" = "--test-image" ] && { IMAGE_FLAG=--test-image; shift; }
IDLE=${1:-60}
DEMO=/run/csagent-demo
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=ap-southeast-7
# Set the demo up once (images, secrets, loop device) unless it already is.
[ -f "$DEMO/config.toml" ] || bash scripts/demo.sh $IMAGE_FLAG
[ -f "$DEMO/config.toml" ] || { echo "bench-start: demo setup failed" >&2; exit 1; }
# BENCH_CONFIG=path runs the agent with another config (e.g. the demo's with other
# intervals); the demo's own polls every 10 s (secrets) and 15 s (metrics).
config=${BENCH_CONFIG:-$DEMO/config.toml}
# BENCH_TLS=1: the agent reaches moto through TLS (scripts/bench-tls-proxy.py on 5443, a CA
# made here, trusted with the system's bundle through SSL_CERT_FILE), as a real host
# reaches AWS: rustls and the certificate store then count in the figures.
if [ "${BENCH_TLS:-0}" = 1 ]; then
  tls=$DEMO/bench-tls
  mkdir -p "$tls"
  if [ ! -f "$tls/srv.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=csagent bench CA" \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$tls/srv.key" -out "$tls/srv.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$tls/ext.cnf"
    openssl x509 -req -in "$tls/srv.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
      -days 30 -extfile "$tls/ext.cnf" -out "$tls/srv.pem" 2>/dev/null
  fi
  cat /etc/ssl/certs/ca-certificates.crt "$tls/ca.pem" > "$tls/bundle.pem"
  export SSL_CERT_FILE=$tls/bundle.pem
  sed 's|endpoint_url = "http://127.0.0.1:5055"|endpoint_url = "https://127.0.0.1:5443"|' "$config" > "$tls/config.toml"
  grep -q 'endpoint_url = "https://127.0.0.1:5443"' "$tls/config.toml" ||
    { echo "bench-start: BENCH_TLS=1 needs endpoint_url http://127.0.0.1:5055 in $config" >&2; exit 1; }
  config=$tls/config.toml
  python3 scripts/bench-tls-proxy.py 5443 5055 "$tls/srv.pem" "$tls/srv.key" &
  tls_proxy=$!
  trap 'kill $tls_proxy 2>/dev/null || true' EXIT
fi
if [ -n "${CSAGENT_BIN:-}" ]; then
  bin=$CSAGENT_BIN
else
  cargo build -q --release --bin csagent
  bin=${CARGO_TARGET_DIR:-target}/release/csagent
fi

# Fresh start: stop the agent, remove the containers (data stays), start again.
# Wait for it to be gone: its shutdown flushes logs and metrics (up to ~10 s with AWS
# unreachable), and a new agent refuses to start while it holds the control socket.
old_pid=$(cat "$DEMO/csagent.pid" 2>/dev/null || true)
if [ -n "$old_pid" ] && kill "$old_pid" 2>/dev/null; then
  for _ in $(seq 1 300); do kill -0 "$old_pid" 2>/dev/null || break; sleep 0.1; done
fi
docker ps -aq --filter label=csagent.managed=true --filter label=csagent.project=code-server-multi-dev | xargs -r docker rm -f >/dev/null
# A notify socket of our own, so READY=1 is timed the way systemd sees it.
notify=$DEMO/bench-notify.sock ready_file=$DEMO/bench-ready
rm -f "$notify" "$ready_file"
python3 - "$notify" "$ready_file" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(300)
while True:
    msg = s.recv(4096).decode(errors="replace")
    if "READY=1" in msg.split("\n"):
        open(sys.argv[2], "w").write(repr(time.time())); break
PY
listener=$!
while [ ! -S "$notify" ]; do sleep 0.1; done
start=$(date +%s.%N)
NOTIFY_SOCKET=$notify setsid "$bin" run --config "$config" >>"$DEMO/csagent.log" 2>&1 < /dev/null &
pid=$!
echo $pid > "$DEMO/csagent.pid"
running="" healthy=""
while [ -z "$healthy" ]; do
  json=$("$bin" status --json --config "$config" 2>/dev/null || true)
  now=$(date +%s.%N)
  n_run=$(printf '%s' "$json" | python3 -c 'import json,sys
try: d=json.load(sys.stdin); print(sum(1 for x in d["developers"] if x["state"]=="running"))
except Exception: print(0)')
  n_ok=$(printf '%s' "$json" | python3 -c 'import json,sys
try: d=json.load(sys.stdin); print(sum(1 for x in d["developers"] if x["health"]=="healthy"))
except Exception: print(0)')
  [ -z "$running" ] && [ "$n_run" = 8 ] && running=$(python3 -c "print(round($now-$start,1))")
  [ "$n_ok" = 8 ] && healthy=$(python3 -c "print(round($now-$start,1))")
  if python3 -c "import sys; sys.exit(0 if $now-$start > 300 else 1)"; then echo "timeout" >&2; exit 1; fi
  sleep 0.5
done
health_interval=$({ grep -E "^health_interval" "$config" || true; } | cut -d"\"" -f2); health_interval=${health_interval:-30s}
wait "$listener" || true
ready=$(python3 -c "print(round($(cat "$ready_file" 2>/dev/null || echo 0)-$start,1))")
rm -f "$notify" "$ready_file"
echo "start -> READY=1: ${ready}s; -> 8 running: ${running}s; -> 8 healthy: ${healthy}s (health_interval ${health_interval}: Docker's first check comes one interval after start)"

ticks=$(getconf CLK_TCK)
# The agent's own CPU (utime + stime) and that of the programs it ran and reaped
# meanwhile (cutime + cstime: blkid, iptables).
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
cpu_children() { awk '{print $16+$17}' "/proc/$pid/stat"; }
c0=$(cpu); k0=$(cpu_children); sleep "$IDLE"; c1=$(cpu); k1=$(cpu_children)
rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
python3 -c "print(f'idle over ${IDLE}s: CPU {100*($c1-$c0)/$ticks/$IDLE:.3f}% of one core (+ {100*($k1-$k0)/$ticks/$IDLE:.3f}% in programs it ran), RSS {$rss/1024:.1f} MiB (peak {$hwm/1024:.1f} MiB)')"
# Where the idle RSS is: the binary's own pages (text, data: file-backed, shared
# with the page cache), other files (libc...), the main heap, anonymous mappings
# (glibc arenas of other threads, large allocations, thread stacks).
exe=$(readlink -f "/proc/$pid/exe")
awk -v exe="$exe" '
  /^[0-9a-f]+-[0-9a-f]+ / { path = $6; kind = (path == exe) ? "binary" : (path == "[heap]") ? "heap" : (path == "[stack]") ? "stack" : (path ~ /^\//) ? "files" : (path == "") ? "anon" : "other"; next }
  /^Rss:/ { rss[kind] += $2 }
  END { printf "RSS by mapping: binary %.1f MiB, other files %.1f MiB, [heap] %.1f MiB, anonymous %.1f MiB, [stack] %.1f MiB, other %.1f MiB\n", rss["binary"]/1024, rss["files"]/1024, rss["heap"]/1024, rss["anon"]/1024, rss["stack"]/1024, rss["other"]/1024 }
' "/proc/$pid/smaps"
echo "threads: $(awk '/^Threads/{print $2}' "/proc/$pid/status"); binary: $(stat -c %s "$exe") bytes ($exe)"
