#!/usr/bin/env bash
# See csagent do its whole job locally, without an AWS account (as root):
#   scripts/demo.sh               the team image (images/, with Claude Code; built locally, cached)
#   scripts/demo.sh --test-image  the small stand-in image (fast)
#   scripts/demo.sh --password dev3   print dev3's password (read from moto)
#   scripts/demo.sh --down        remove everything the demo made
# It starts dockerd and moto (127.0.0.1:5055) if needed, seeds 8 developers'
# secrets, makes a loop device standing in for the EBS volume, runs csagent with
# examples/local.toml and prints `csagent status` and the login URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh

DEMO=/run/csagent-demo
DATA=/var/lib/csagent-demo
PORT=5055
PROJECT=code-server-multi-dev
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=ap-southeast-7
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (loop device, mount, docker)" >&2; exit 1; }

py() { "$CSAGENT_VENV/bin/python" - "$@"; }

down() {
  log "removing the demo"
  if [ -f "$DEMO/csagent.pid" ]; then kill "$(cat "$DEMO/csagent.pid")" 2>/dev/null || true; sleep 2; fi
  # dockerd may be down (e.g. after a reboot): clean up the rest regardless.
  if docker info >/dev/null 2>&1; then
    docker ps -aq --filter label=csagent.managed=true --filter "label=csagent.project=$PROJECT" | xargs -r docker rm -f >/dev/null
    docker network rm csagent >/dev/null 2>&1 || true
  else
    echo "dockerd is not running: demo containers (if any) are left; rerun --down once it is up" >&2
  fi
  iptables -w -D DOCKER-USER -s 172.30.0.0/24 -d 169.254.169.254/32 -m comment \
    --comment "csagent: containers must not reach IMDS" -j DROP 2>/dev/null || true
  iptables -w -D INPUT -s 172.30.0.0/24 -m conntrack --ctstate NEW -m comment \
    --comment "csagent: containers must not reach the host" -j DROP 2>/dev/null || true
  umount /mnt/csagent-demo 2>/dev/null || true
  umount "$DEMO/run" 2>/dev/null || true
  if [ -L "$DEMO/data-disk" ]; then losetup -d "$(readlink -f "$DEMO/data-disk")" 2>/dev/null || true; fi
  if [ -f "$DEMO/moto.pid" ]; then kill "$(cat "$DEMO/moto.pid")" 2>/dev/null || true; fi
  rm -rf "$DEMO" "$DATA"
  rmdir /mnt/csagent-demo 2>/dev/null || true
  echo "demo removed (dockerd left running)"
}

password() {
  py "$PROJECT/$1/password" <<'PY'
import sys, boto3
print(boto3.client("secretsmanager").get_secret_value(SecretId=sys.argv[1])["SecretString"])
PY
}

case "${1:-}" in
  --down) ensure_python_tools >/dev/null; down; exit 0 ;;
  --password) ensure_python_tools >/dev/null; password "${2:?usage: demo.sh --password devN}"; exit 0 ;;
  --test-image|"") ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac

mkdir -p "$DEMO" "$DATA"
log "packages and tools"
ensure_packages
ensure_python_tools
log "docker engine"
start_dockerd >/dev/null

log "moto on 127.0.0.1:$PORT"
if ! curl -fs "$AWS_ENDPOINT_URL/moto-api/" >/dev/null 2>&1; then
  start_moto "$PORT" "$DEMO/moto.log" > "$DEMO/moto.pid"
fi

log "seeding 8 developers' secrets"
py "$PROJECT" <<'PY'
import sys, secrets, boto3
sm = boto3.client("secretsmanager")
project = sys.argv[1]
for i in range(1, 9):
    for kind, value in (("password", secrets.token_urlsafe(18)), ("claude-api-key", "REPLACE_WITH_ACTUAL_KEY")):
        name = f"{project}/dev{i}/{kind}"
        try:
            sm.create_secret(Name=name, SecretString=value)
        except sm.exceptions.ResourceExistsException:
            pass
print("secrets ready")
PY

config="$DEMO/config.toml"
cp examples/local.toml "$config"
if [ "${1:-}" = "--test-image" ]; then
  log "test image"
  bash scripts/build-test-image.sh
  sed -i 's|^image = .*|image = "csagent-test/code-server:latest"|' "$config"
else
  log "the team's code-server image (first build takes a while; cached afterwards)"
  bash scripts/build-code-server-image.sh
  sed -i 's|^image = .*|image = "csagent/code-server-team:4.96.4"|' "$config"
fi

log "loop device standing in for the EBS volume"
if [ ! -L "$DEMO/data-disk" ]; then
  truncate -s 4G "$DATA/disk.img"
  ln -sf "$(losetup -f --show "$DATA/disk.img")" "$DEMO/data-disk"
fi
readlink -f "$DEMO/data-disk"
# Credential files must live on a tmpfs.
mkdir -p "$DEMO/run"
mountpoint -q "$DEMO/run" || mount -t tmpfs -o mode=0755,size=16m tmpfs "$DEMO/run"

log "building and starting csagent"
cargo build -q
bin=${CARGO_TARGET_DIR:-target}/debug/csagent
if [ -f "$DEMO/csagent.pid" ] && kill -0 "$(cat "$DEMO/csagent.pid")" 2>/dev/null; then
  kill -HUP "$(cat "$DEMO/csagent.pid")"
else
  setsid "$bin" run --config "$config" >>"$DEMO/csagent.log" 2>&1 < /dev/null &
  echo $! > "$DEMO/csagent.pid"
fi
echo "log: $DEMO/csagent.log"

printf 'waiting for 8 healthy developers'
for _ in $(seq 1 180); do
  if "$bin" status --config "$config" >/dev/null 2>&1; then break; fi
  printf '.'; sleep 2
done
echo
"$bin" status --config "$config" || true

cat <<EOT

Log in (each developer has their own port):
$(for i in $(seq 1 8); do echo "  dev$i  http://localhost:$((8442 + i))/"; done)

A password:            scripts/demo.sh --password dev5
Status again:          $bin status --config $config
Rotate dev5's secret:  AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL $CSAGENT_VENV/bin/python -c \\
  'import boto3; boto3.client("secretsmanager","ap-southeast-7").put_secret_value(SecretId="$PROJECT/dev5/password", SecretString="new-pass-123")'
Remove everything:     scripts/demo.sh --down
EOT
