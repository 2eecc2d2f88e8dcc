# Shared by .ci/run and scripts/demo.sh: install what csagent's tests and demo
# need, and start dockerd and moto_server. Source it; it defines functions only.

CSAGENT_CACHE=${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}
CSAGENT_VENV=$CSAGENT_CACHE/venv

log() { printf '\n== %s == [%s, %ss in]\n' "$*" "$(date +%H:%M:%S)" "$SECONDS"; }

# Debian packages for the commands the agent and its tests run.
ensure_packages() {
  local need=() pair
  for pair in dockerd:docker.io iptables:iptables mkfs.ext4:e2fsprogs mkfs.xfs:xfsprogs \
              losetup:util-linux sfdisk:fdisk cryptsetup:cryptsetup-bin busybox:busybox-static \
              curl:curl ip:iproute2 lintian:lintian dpkg-deb:dpkg systemd-analyze:systemd \
              setpriv:util-linux python3:python3 dpkg-shlibdeps:dpkg-dev strip:binutils \
              docker-registry:docker-registry htpasswd:apache2-utils \
              qemu-system-x86_64:qemu-system-x86 cpio:cpio depmod:kmod xfs_io:xfsprogs; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  # tests/host_logs.rs reads journal files with journalctl and writes them with
  # systemd-journal-remote (not on PATH).
  command -v journalctl >/dev/null 2>&1 || need+=(systemd)
  [ -x /lib/systemd/systemd-journal-remote ] || need+=(systemd-journal-remote)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # tests/registry_pull.rs starts its own registries on free ports; the package's
  # service (all interfaces, port 5000) is not wanted.
  if [ -d /run/systemd/system ] && systemctl is-enabled docker-registry >/dev/null 2>&1; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
}

# A venv with moto (server), cfn-lint and checkov, kept between runs.
ensure_python_tools() {
  mkdir -p "$CSAGENT_CACHE"
  if ! "$CSAGENT_VENV/bin/python" -c 'import moto, cfnlint, checkov, boto3' 2>/dev/null; then
    python3 -m venv "$CSAGENT_VENV"
    "$CSAGENT_VENV/bin/pip" install -q --upgrade pip
    "$CSAGENT_VENV/bin/pip" install -q 'moto[server]' cfn-lint checkov
  fi
  export PATH="$CSAGENT_VENV/bin:$PATH"
}

# cargo-deb (builds the .deb), installed once into the cache.
ensure_cargo_deb() {
  export PATH="$CSAGENT_CACHE/cargo-bin/bin:$PATH"
  if ! command -v cargo-deb >/dev/null 2>&1; then
    CARGO_TARGET_DIR="$CSAGENT_CACHE/cargo-deb-build" \
      cargo install -q cargo-deb --locked --root "$CSAGENT_CACHE/cargo-bin"
  fi
}

# Starts dockerd unless one answers; prints the pid it started (empty if none).
start_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  setsid dockerd >>"$CSAGENT_CACHE/dockerd.log" 2>&1 < /dev/null &
  local pid=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  if ! docker info >/dev/null 2>&1; then
    echo "dockerd did not start; last lines of $CSAGENT_CACHE/dockerd.log:" >&2
    tail -30 "$CSAGENT_CACHE/dockerd.log" >&2
    return 1
  fi
  echo "$pid"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts moto_server on 127.0.0.1:$1 (logging to $2); prints its pid.
start_moto() {
  local port=$1 logfile=$2
  setsid "$CSAGENT_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 < /dev/null &
  local pid=$!
  for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
    sleep 0.5
  done
  curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 || { echo "moto_server did not start; see $logfile" >&2; return 1; }
  echo "$pid"
}

# The real-browser test's tools: Debian's chromium, and playwright-core from npm (pinned, in
# the cache; Playwright's own browser download is not used) to drive it. The test finds
# playwright-core through the link $CSAGENT_CACHE/playwright.
CSAGENT_PLAYWRIGHT_VERSION=1.65.1
CSAGENT_PLAYWRIGHT_DIR=$CSAGENT_CACHE/playwright-$CSAGENT_PLAYWRIGHT_VERSION
ensure_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    echo "installing: chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  fi
  if [ ! -f "$CSAGENT_PLAYWRIGHT_DIR/node_modules/playwright-core/package.json" ]; then
    rm -rf "$CSAGENT_PLAYWRIGHT_DIR.tmp"
    mkdir -p "$CSAGENT_PLAYWRIGHT_DIR.tmp"
    npm install --prefix "$CSAGENT_PLAYWRIGHT_DIR.tmp" --no-save --no-fund --no-audit \
      --cache "$CSAGENT_CACHE/npm-cache" "playwright-core@$CSAGENT_PLAYWRIGHT_VERSION" >/dev/null
    mv "$CSAGENT_PLAYWRIGHT_DIR.tmp" "$CSAGENT_PLAYWRIGHT_DIR"
  fi
  ln -sfn "$(basename "$CSAGENT_PLAYWRIGHT_DIR")" "$CSAGENT_CACHE/playwright"
  export CSAGENT_PLAYWRIGHT_DIR
}
