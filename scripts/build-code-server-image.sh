#!/usr/bin/env bash
# Builds the REAL code-server image `codercom/code-server:4.96.4` locally, from the npm
# registry and Debian packages only (no container registry, no GitHub):
#
#   1. `npm install --ignore-scripts code-server@VERSION` (its install script reaches GitHub);
#   2. in lib/vscode: the one git dependency (@vscode/proxy-agent) is pointed at the registry
#      tarball of the same version and integrity, then `npm install --omit=dev --ignore-scripts`;
#      the extensions' shared dependency (typescript) likewise;
#   3. Debian's ripgrep becomes @vscode/ripgrep's binary; node_modules.asar -> node_modules;
#   4. the native modules are built with node-gyp against this machine's node headers;
#   5. a root filesystem (node + its libraries, the code-server tree, curl, busybox, dumb-init,
#      user coder 1000:1000) is `docker import`ed with the official image's settings.
#
# The image carries `csagent.built-locally=true` and `csagent.code-server-build-hash=<hash of
# the inputs>` (this script, the version, node, the Debian packages used). A run that finds an
# image with the same hash does nothing. The npm work is cached in
# ${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}/code-server-build, keyed by what it depends on.
#
# Runs as root on Debian/Ubuntu with node 20 and npm; installs missing Debian packages itself.
#   CODE_SERVER_VERSION  (default 4.96.4)
#   CODE_SERVER_IMAGE    (default codercom/code-server:$CODE_SERVER_VERSION)
#   BUILD_JOBS           parallel compile jobs for node-gyp (default: number of CPUs)
set -euo pipefail
SCRIPT=$(readlink -f "$0")
cd "$(dirname "$SCRIPT")/.."

VERSION=${CODE_SERVER_VERSION:-4.96.4}
IMAGE=${CODE_SERVER_IMAGE:-codercom/code-server:$VERSION}
CACHE=${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}/code-server-build
JOBS=${BUILD_JOBS:-$(nproc)}
# Bump when the way the npm tree is built changes (steps 1-4), so cached trees are not reused.
TREE_RECIPE=1
NODE_MAJOR_WANTED=20
# Built with node-gyp; everything else in the tree is JavaScript or WebAssembly.
VSCODE_NATIVE_MODULES=(node-pty @vscode/spdlog @parcel/watcher kerberos native-watchdog @vscode/deviceid)

started=$SECONDS
say() { printf 'build-code-server-image: [%4ss] %s\n' "$((SECONDS - started))" "$*"; }
die() { printf 'build-code-server-image: ERROR: %s\n' "$*" >&2; exit 1; }

# Runs a long step with its output in a log file; on failure shows the log's tail and stops.
run_logged() {
  local what=$1 log=$2; shift 2
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2 || true
    die "$what failed (full log: $log)"
  fi
}

# ---------------------------------------------------------------------------------------------
# Tools and Debian packages
# ---------------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and talks to dockerd)"
command -v docker >/dev/null || die "docker missing (apt-get install docker.io, and start dockerd)"
docker info >/dev/null 2>&1 || die "dockerd is not reachable (start it: dockerd &)"

# Build: compilers and the headers the native modules need. Runtime: what goes into the image.
BUILD_PACKAGES=(build-essential python3 pkg-config libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev)
RUNTIME_PACKAGES=(ripgrep dumb-init busybox-static curl ca-certificates)
missing=()
for p in "${BUILD_PACKAGES[@]}" "${RUNTIME_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run_logged "apt-get update" /tmp/build-code-server-apt.log apt-get update
  run_logged "apt-get install ${missing[*]}" /tmp/build-code-server-apt.log \
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# node: the binary that goes into the image must be the one whose headers the modules are
# built against (same ABI).
command -v node >/dev/null || die "node missing (node $NODE_MAJOR_WANTED is required)"
command -v npm >/dev/null || die "npm missing"
NODE_BIN=$(readlink -f "$(command -v node)")
NODE_VERSION=$(node --version)
node_major=${NODE_VERSION#v}; node_major=${node_major%%.*}
[ "$node_major" = "$NODE_MAJOR_WANTED" ] ||
  die "code-server $VERSION needs node $NODE_MAJOR_WANTED, this machine has $NODE_VERSION"
NODEDIR=/usr
have_headers() { [ -f "$NODEDIR/include/node/node_version.h" ] && [ -f "$NODEDIR/include/node/common.gypi" ]; }
# nodesource's nodejs ships the headers; Debian's own nodejs has them in libnode-dev
# (same source package, so the same version as the binary).
if ! have_headers && [ "$(dpkg-query -S "$NODE_BIN" 2>/dev/null | cut -d: -f1)" = nodejs ] &&
   ! dpkg-query -W -f='${Status}' libnode-dev 2>/dev/null | grep -q 'install ok installed'; then
  say "node headers missing: installing libnode-dev"
  export DEBIAN_FRONTEND=noninteractive
  run_logged "apt-get update" /tmp/build-code-server-apt.log apt-get update
  run_logged "apt-get install libnode-dev" /tmp/build-code-server-apt.log \
    apt-get install -y --no-install-recommends libnode-dev
fi
have_headers ||
  die "node headers missing in $NODEDIR/include/node (they come with nodesource's nodejs, or Debian's libnode-dev for Debian's nodejs)"
hdr_major=$(awk '/#define NODE_MAJOR_VERSION/{print $3}' "$NODEDIR/include/node/node_version.h")
[ "$hdr_major" = "$node_major" ] ||
  die "node headers in $NODEDIR/include/node are for node $hdr_major but node is $NODE_VERSION"

# node-gyp: npm bundles one.
NODE_GYP=()
if command -v node-gyp >/dev/null; then
  NODE_GYP=(node-gyp)
else
  npm_root=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  for cand in "$npm_root/node_modules/node-gyp/bin/node-gyp.js" \
              "$(npm root -g 2>/dev/null)/npm/node_modules/node-gyp/bin/node-gyp.js"; do
    if [ -f "$cand" ]; then NODE_GYP=(node "$cand"); break; fi
  done
fi
[ "${#NODE_GYP[@]}" -gt 0 ] || die "node-gyp not found (npm normally bundles it; or: npm install -g node-gyp)"

# ---------------------------------------------------------------------------------------------
# Is the image already there?
# ---------------------------------------------------------------------------------------------
pkg_versions() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null | sort; }
tree_key=$( {
  echo "code-server=$VERSION recipe=$TREE_RECIPE node=$NODE_VERSION arch=$(uname -m)"
  pkg_versions "${BUILD_PACKAGES[@]}" ripgrep
} | sha256sum | cut -c1-16)
image_key=$( {
  echo "tree=$tree_key"
  sha256sum < "$SCRIPT"
  sha256sum < "$NODE_BIN"
  pkg_versions "${RUNTIME_PACKAGES[@]}" libc6 libstdc++6
} | sha256sum | cut -c1-16)

existing=$(docker image inspect -f '{{ index .Config.Labels "csagent.code-server-build-hash" }}' "$IMAGE" 2>/dev/null || true)
if [ "$existing" = "$image_key" ]; then
  say "$IMAGE is up to date ($image_key)"
  exit 0
fi
[ -z "$existing" ] || say "$IMAGE exists with build hash '$existing', rebuilding for $image_key"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

export npm_config_cache="$CACHE/npm-cache"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
tree="$CACHE/tree-$VERSION-$tree_key"

# ---------------------------------------------------------------------------------------------
# The npm tree with native modules (cached)
# ---------------------------------------------------------------------------------------------
build_tree() {
  local work=$1 logs=$1.logs
  rm -rf "$work" "$logs"; mkdir -p "$work" "$logs"
  say "npm install code-server@$VERSION (scripts off: its install script reaches GitHub)"
  (cd "$work" && echo '{"name":"code-server-image","private":true}' > package.json &&
    run_logged "npm install code-server@$VERSION" "$logs/npm-code-server.log" \
      npm install --ignore-scripts --no-package-lock "code-server@$VERSION")
  local cs="$work/node_modules/code-server" vs="$work/node_modules/code-server/lib/vscode"
  [ -f "$cs/out/node/entry.js" ] || die "npm install did not produce $cs/out/node/entry.js"

  say "lib/vscode: git dependencies -> registry tarballs of the same version and integrity"
  (cd "$vs" && node - <<'EOS'
const fs = require("fs");
const { execFileSync } = require("child_process");
const file = "npm-shrinkwrap.json";
const lock = JSON.parse(fs.readFileSync(file, "utf8"));
let changed = 0;
for (const [key, pkg] of Object.entries(lock.packages || {})) {
  if (!pkg.resolved || !/^git/.test(pkg.resolved)) continue;
  const name = key.replace(/^.*node_modules\//, "");
  const dist = JSON.parse(execFileSync("npm", ["view", `${name}@${pkg.version}`, "dist", "--json"], { encoding: "utf8" }));
  if (dist.integrity !== pkg.integrity) {
    console.error(`${name}@${pkg.version}: registry integrity ${dist.integrity} differs from the lock's ${pkg.integrity}`);
    process.exit(1);
  }
  console.log(`${name}@${pkg.version}: ${pkg.resolved} -> ${dist.tarball}`);
  pkg.resolved = dist.tarball;
  changed++;
}
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + "\n");
console.log(`${changed} git dependencies replaced`);
EOS
  ) || die "rewriting lib/vscode/npm-shrinkwrap.json failed"

  say "lib/vscode: npm install --omit=dev"
  (cd "$vs" && run_logged "npm install in lib/vscode" "$logs/npm-vscode.log" \
    npm install --omit=dev --ignore-scripts --nodedir="$NODEDIR")
  say "lib/vscode/extensions: npm install --omit=dev (typescript for the TS/JS language features)"
  (cd "$vs/extensions" && run_logged "npm install in lib/vscode/extensions" "$logs/npm-extensions.log" \
    npm install --omit=dev --ignore-scripts &&
    run_logged "extensions postinstall" "$logs/extensions-postinstall.log" node ./postinstall.mjs)

  # What code-server's postinstall.sh does besides the installs.
  ln -sfn node_modules "$vs/node_modules.asar"
  (cd "$vs/bin/remote-cli" && ln -sfn code-linux.sh code-server)
  (cd "$vs/bin/helpers" && ln -sfn browser-linux.sh browser.sh)

  say "ripgrep: Debian's rg as @vscode/ripgrep's binary"
  mkdir -p "$vs/node_modules/@vscode/ripgrep/bin"
  install -m 0755 "$(command -v rg)" "$vs/node_modules/@vscode/ripgrep/bin/rg"

  local m
  for m in "${VSCODE_NATIVE_MODULES[@]}"; do
    say "node-gyp rebuild $m"
    (cd "$vs/node_modules/$m" && run_logged "node-gyp rebuild $m" "$logs/gyp-${m//\//_}.log" \
      "${NODE_GYP[@]}" rebuild --nodedir="$NODEDIR" --jobs="$JOBS")
  done
  # argon2 is loaded through node-pre-gyp from lib/binding/napi-v3; node-pre-gyp would pass
  # these variables (node-gyp turns unknown --options into gyp variables; the path must be
  # absolute, a relative one is taken from argon2/build).
  say "node-gyp rebuild argon2 (napi v3)"
  (cd "$work/node_modules/argon2" && run_logged "node-gyp rebuild argon2" "$logs/gyp-argon2.log" \
    "${NODE_GYP[@]}" rebuild --nodedir="$NODEDIR" --jobs="$JOBS" \
      --module_name=argon2 --napi_build_version=3 --module_path="$PWD/lib/binding/napi-v3")

  # Object files are not needed at run time; the .node files under build/Release are.
  find "$work/node_modules" -path '*/build/Release/obj.target' -type d -prune -exec rm -rf {} +
  find "$work/node_modules" -path '*/build/Release/.deps' -type d -prune -exec rm -rf {} +

  say "checking that every native module loads"
  (cd "$vs" && node --input-type=module -e '
    import { createRequire } from "module";
    const require = createRequire(process.cwd() + "/package.json");
    for (const m of ["node-pty", "@vscode/spdlog", "@parcel/watcher", "kerberos", "native-watchdog", "@vscode/deviceid"]) {
      require(m);
    }') || die "a native module in lib/vscode does not load"
  (cd "$work" && node -e 'require("argon2")') || die "argon2 does not load"
}

if [ -d "$tree" ]; then
  say "using cached npm tree $tree"
else
  build_tree "$tree.tmp"
  mv "$tree.tmp" "$tree"
  rm -rf "$tree.tmp.logs"
  # Trees for other inputs are stale now.
  for old in "$CACHE"/tree-*; do
    [ "$old" = "$tree" ] || rm -rf "$old"
  done
  say "npm tree ready: $tree ($(du -sh "$tree" | cut -f1))"
fi

# ---------------------------------------------------------------------------------------------
# Root filesystem and image
# ---------------------------------------------------------------------------------------------
say "assembling the root filesystem"
root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib,etc/ssl/certs,tmp,var/tmp,proc,sys,dev,run,root}
mkdir -p "$root"/home/coder/{workspace,.local/share/code-server,.config}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"

# code-server and its dependencies, as npm laid them out.
cp -a "$tree/node_modules" "$root/usr/lib/code-server-node_modules.tmp"
mkdir -p "$root/usr/lib/code-server"
mv "$root/usr/lib/code-server-node_modules.tmp" "$root/usr/lib/code-server/node_modules"
rm -rf "$root/usr/lib/code-server/node_modules/.bin"

install -m 0755 "$NODE_BIN" "$root/usr/bin/node"
install -m 0755 "$(command -v curl)" "$root/usr/bin/curl"
install -m 0755 "$(command -v dumb-init)" "$root/usr/bin/dumb-init"
install -m 0755 "$(command -v busybox)" "$root/bin/busybox"
# A shell and the usual commands, as busybox applets (never over a real binary).
for applet in $(busybox --list); do
  case $applet in busybox|init|linuxrc) continue ;; esac
  [ -e "$root/bin/$applet" ] || [ -e "$root/usr/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"

# Shared libraries of every dynamic ELF file, at the same paths as on the host.
libs=$(
  {
    echo "$root/usr/bin/node"; echo "$root/usr/bin/curl"; echo "$root/usr/bin/dumb-init"
    find "$root/usr/lib/code-server" -type f \( -name '*.node' -o -path '*/@vscode/ripgrep/bin/rg' \)
  } | while read -r f; do
    ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\/[^ ]*ld-linux/{print $1}' || true
  done | sort -u
)
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# Every library found must resolve inside the image too (a missing one fails at run time).
for f in "$root/usr/bin/node" "$root/usr/bin/curl"; do
  if ldd "$f" | grep -q 'not found'; then die "$f has unresolved libraries: $(ldd "$f" | grep 'not found')"; fi
done

cat > "$root/usr/bin/code-server" <<'EOS'
#!/bin/sh
# code-server from the npm package, run by the node it was built for.
exec /usr/bin/node /usr/lib/code-server/node_modules/code-server/out/node/entry.js "$@"
EOS
cat > "$root/usr/bin/entrypoint.sh" <<'EOS'
#!/bin/sh
# Like the official image's entrypoint: dumb-init as PID 1 (signals, zombies), then
# code-server with every argument (the image passes --bind-addr 0.0.0.0:8080 .).
set -eu
exec /usr/bin/dumb-init /usr/bin/code-server "$@"
EOS
chmod 0755 "$root/usr/bin/code-server" "$root/usr/bin/entrypoint.sh"

printf 'root:x:0:0:root:/root:/bin/sh\ncoder:x:1000:1000:coder:/home/coder:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\ncoder:x:1000:\n' > "$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$root/etc/hosts"
chown -R 1000:1000 "$root/home/coder"

say "importing $IMAGE ($(du -sh "$root" | cut -f1) root filesystem)"
tar -C "$root" --numeric-owner -cf - . | docker import \
  --change 'ENTRYPOINT ["/usr/bin/entrypoint.sh", "--bind-addr", "0.0.0.0:8080", "."]' \
  --change 'USER 1000' \
  --change 'WORKDIR /home/coder' \
  --change 'ENV HOME=/home/coder USER=coder SHELL=/bin/sh LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'EXPOSE 8080' \
  --change "LABEL csagent.built-locally=true csagent.code-server-build-hash=$image_key org.opencontainers.image.version=$VERSION" \
  - "$IMAGE" >/dev/null || die "docker import of $IMAGE failed"

# The image the tag pointed at before is dangling now; drop it unless a container uses it.
docker image prune -f --filter "label=csagent.built-locally=true" >/dev/null 2>&1 || true

say "smoke test: native modules load inside $IMAGE (a terminal via node-pty, argon2)"
out=$(docker run --rm --entrypoint /usr/bin/node -w /usr/lib/code-server/node_modules/code-server/lib/vscode \
  "$IMAGE" --input-type=module -e '
    import { createRequire } from "module";
    const require = createRequire(process.cwd() + "/package.json");
    for (const m of ["@vscode/spdlog", "@parcel/watcher", "kerberos", "native-watchdog", "@vscode/deviceid"]) require(m);
    const argon2 = createRequire("/usr/lib/code-server/node_modules/code-server/package.json")("argon2");
    if (!(await argon2.hash("x")).startsWith("$argon2id$")) throw new Error("argon2 hash");
    const pty = require("node-pty").spawn("/bin/sh", ["-c", "echo pty-ok"], {});
    pty.onData((d) => process.stdout.write(d));' 2>&1) || die "native modules do not load inside $IMAGE: $out"
case $out in *pty-ok*) ;; *) die "node-pty could not run a shell inside $IMAGE: $out" ;; esac

say "smoke test: $IMAGE answers /healthz"
cid=$(docker run -d --rm -e PASSWORD=smoke-test "$IMAGE") || die "docker run $IMAGE failed"
ok=
for _ in $(seq 1 60); do
  if docker exec "$cid" curl -fsS http://localhost:8080/healthz >/dev/null 2>&1; then ok=1; break; fi
  sleep 1
done
if [ -z "$ok" ]; then
  docker logs "$cid" 2>&1 | tail -n 30 >&2 || true
  docker rm -f "$cid" >/dev/null 2>&1 || true
  die "$IMAGE did not answer http://localhost:8080/healthz within 60s"
fi
docker rm -f "$cid" >/dev/null 2>&1 || true
size=$(docker image inspect -f '{{ .Size }}' "$IMAGE")
say "built $IMAGE ($image_key, $((size / 1024 / 1024)) MiB)"
