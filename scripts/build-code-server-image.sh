#!/usr/bin/env bash
# Builds, locally and from the npm registry and Debian packages only (no container registry,
# no GitHub), the two images developers get:
#
#   codercom/code-server:4.96.4   a stand-in for the official image (Debian 12, user coder
#                                 1000:1000 with bash, code-server, dumb-init, the official
#                                 entrypoint and settings), which images/Dockerfile builds on;
#   csagent/code-server-team:4.96.4   images/Dockerfile built FROM that stand-in: the team
#                                 image (Claude Code, git, build tools, ...), as in production.
#
#   1. `npm install --ignore-scripts code-server@VERSION` (its install script reaches GitHub);
#   2. in lib/vscode: the one git dependency (@vscode/proxy-agent) is pointed at the registry
#      tarball of the same version and integrity, then `npm install --omit=dev --ignore-scripts`;
#      the extensions' shared dependency (typescript) likewise;
#   3. Debian's ripgrep becomes @vscode/ripgrep's binary; node_modules.asar -> node_modules;
#   4. the native modules are built with node-gyp against this machine's node headers;
#   5. a Debian 12 root filesystem from debootstrap with the official image's packages, user
#      coder (uid/gid 1000, /bin/bash) and locale;
#   6. that root filesystem plus the code-server tree and node (at the official image's
#      /usr/lib/code-server/lib/node) is `docker import`ed with the official image's settings;
#   7. `docker build --build-arg BASE=<the stand-in> images/` gives the team image.
#
# Differences from the official image, on purpose: no fixuid (it comes from GitHub; csagent
# runs every container as uid 1000 anyway), and the stand-in trusts this machine's extra CA
# certificates (/usr/local/share/ca-certificates), so that step 7 reaches npm through an
# intercepting proxy like the build machine does.
#
# Both images carry `csagent.built-locally=true` and a hash of their inputs
# (`csagent.code-server-build-hash`, `csagent.team-build-hash`): a run that finds both up to
# date does nothing. The npm tree and the debootstrap root filesystem are cached in
# ${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}/code-server-build, keyed by what they depend on;
# docker's build cache keeps step 7's layers while the stand-in is unchanged.
#
# Runs as root on Debian/Ubuntu with node 20 and npm; installs missing Debian packages itself.
#   CODE_SERVER_VERSION  (default 4.96.4)
#   CODE_SERVER_IMAGE    the stand-in (default codercom/code-server:$CODE_SERVER_VERSION)
#   TEAM_IMAGE           (default csagent/code-server-team:$CODE_SERVER_VERSION)
#   DEBIAN_MIRROR        (default http://deb.debian.org/debian)
#   BUILD_JOBS           parallel compile jobs for node-gyp (default: number of CPUs)
set -euo pipefail
SCRIPT=$(readlink -f "$0")
cd "$(dirname "$SCRIPT")/.."

VERSION=${CODE_SERVER_VERSION:-4.96.4}
IMAGE=${CODE_SERVER_IMAGE:-codercom/code-server:$VERSION}
TEAM_IMAGE=${TEAM_IMAGE:-csagent/code-server-team:$VERSION}
CACHE=${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}/code-server-build
JOBS=${BUILD_JOBS:-$(nproc)}
# Bump when the way the npm tree is built changes (steps 1-4), so cached trees are not reused.
TREE_RECIPE=1
# Bump when step 5 changes in a way the package list does not show.
ROOTFS_RECIPE=1
NODE_MAJOR_WANTED=20
# Built with node-gyp; everything else in the tree is JavaScript or WebAssembly.
VSCODE_NATIVE_MODULES=(node-pty @vscode/spdlog @parcel/watcher kerberos native-watchdog @vscode/deviceid)
# The official image's Debian release and packages (its ci/release-image/Dockerfile).
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS_PACKAGES=(ca-certificates curl dumb-init git git-lfs htop locales lsb-release man-db nano
                 openssh-client procps sudo vim-tiny wget zsh)

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

# Build: compilers and the headers the native modules need (their versions key the npm tree).
# Host tools: Debian's rg goes into the tree; debootstrap makes the root filesystem.
BUILD_PACKAGES=(build-essential python3 pkg-config libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev)
HOST_TOOLS=(ripgrep debootstrap)
missing=()
for p in "${BUILD_PACKAGES[@]}" "${HOST_TOOLS[@]}"; do
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
# Are the images already there?
# ---------------------------------------------------------------------------------------------
pkg_versions() { dpkg-query -W -f='${Package}=${Version}\n' "$@" 2>/dev/null | sort; }
tree_key=$( {
  echo "code-server=$VERSION recipe=$TREE_RECIPE node=$NODE_VERSION arch=$(uname -m)"
  pkg_versions "${BUILD_PACKAGES[@]}" ripgrep
} | sha256sum | cut -c1-16)
extra_cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${extra_cas[0]}" ] || extra_cas=()
rootfs_key=$( {
  echo "suite=$DEBIAN_SUITE mirror=$DEBIAN_MIRROR recipe=$ROOTFS_RECIPE arch=$(uname -m)"
  echo "packages=${ROOTFS_PACKAGES[*]}"
  pkg_versions debootstrap
  [ "${#extra_cas[@]}" = 0 ] || cat "${extra_cas[@]}"
} | sha256sum | cut -c1-16)
image_key=$( {
  echo "tree=$tree_key rootfs=$rootfs_key"
  sha256sum < "$SCRIPT"
  sha256sum < "$NODE_BIN"
} | sha256sum | cut -c1-16)
team_key=$( {
  echo "base=$image_key"
  (cd images && find . -type f | LC_ALL=C sort | xargs sha256sum)
} | sha256sum | cut -c1-16)

label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }
existing=$(label "$IMAGE" csagent.code-server-build-hash)
existing_team=$(label "$TEAM_IMAGE" csagent.team-build-hash)
if [ "$existing" = "$image_key" ] && [ "$existing_team" = "$team_key" ]; then
  say "$IMAGE ($image_key) and $TEAM_IMAGE ($team_key) are up to date"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"

export npm_config_cache="$CACHE/npm-cache"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
tree="$CACHE/tree-$VERSION-$tree_key"
rootfs="$CACHE/rootfs-$DEBIAN_SUITE-$rootfs_key"

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

# Unmounts whatever a killed debootstrap left mounted under $1 (proc, sys), so that removing
# the directory cannot reach into the host's /proc or /sys.
umount_under() {
  local m
  for m in $(awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" || die "cannot unmount $m (left by an earlier build); unmount it and rerun"
  done
}

# ---------------------------------------------------------------------------------------------
# Debian root filesystem (cached): the official image's packages, user and locale
# ---------------------------------------------------------------------------------------------
build_rootfs() {
  local dir=$1 log=$1.log
  umount_under "$dir"
  rm -rf "$dir"; mkdir -p "$dir"
  say "debootstrap $DEBIAN_SUITE from $DEBIAN_MIRROR (${ROOTFS_PACKAGES[*]})"
  run_logged "debootstrap" "$log" debootstrap --variant=minbase \
    --include="$(IFS=,; echo "${ROOTFS_PACKAGES[*]}")" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR"
  umount_under "$dir"
  # apt sources as in Debian's own image: the release, its updates and security updates, so
  # images/Dockerfile's apt-get install gets patched packages.
  rm -f "$dir/etc/apt/sources.list"
  cat > "$dir/etc/apt/sources.list.d/debian.sources" <<EOS
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  sed -i 's/^# en_US.UTF-8/en_US.UTF-8/' "$dir/etc/locale.gen"
  run_logged "locale-gen" "$log" chroot "$dir" locale-gen
  # The official image: `adduser --gecos '' --disabled-password coder` (uid/gid 1000,
  # /bin/bash) and password-less sudo (csagent's no-new-privileges turns sudo off).
  run_logged "adduser coder" "$log" chroot "$dir" adduser --gecos '' --disabled-password coder
  [ "$(chroot "$dir" id -u coder):$(chroot "$dir" id -g coder)" = 1000:1000 ] ||
    die "user coder is not 1000:1000 in the root filesystem"
  echo "coder ALL=(ALL) NOPASSWD:ALL" > "$dir/etc/sudoers.d/nopasswd"
  chmod 0440 "$dir/etc/sudoers.d/nopasswd"
  if [ "${#extra_cas[@]}" -gt 0 ]; then
    cp "${extra_cas[@]}" "$dir/usr/local/share/ca-certificates/"
    run_logged "update-ca-certificates" "$log" chroot "$dir" update-ca-certificates
  fi
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  : > "$dir/etc/resolv.conf"
  : > "$dir/etc/hostname"
}

if [ -d "$rootfs" ]; then
  say "using cached root filesystem $rootfs"
else
  build_rootfs "$rootfs.tmp"
  mv "$rootfs.tmp" "$rootfs"
  rm -f "$rootfs.tmp.log"
  for old in "$CACHE"/rootfs-*; do
    [ "$old" = "$rootfs" ] || { umount_under "$old"; rm -rf "$old"; }
  done
  say "root filesystem ready: $rootfs ($(du -sh "$rootfs" | cut -f1))"
fi

# ---------------------------------------------------------------------------------------------
# The stand-in for codercom/code-server
# ---------------------------------------------------------------------------------------------
build_base() {
  say "assembling the root filesystem of $IMAGE"
  local root
  root=$(mktemp -d "$CACHE/image.XXXXXX")
  # shellcheck disable=SC2064 # $root is fixed now
  trap "rm -rf '$root'" EXIT
  cp -a "$rootfs/." "$root/"

  # code-server and its dependencies as npm laid them out, run by the node their native
  # modules were built for, at the path the official package keeps its node.
  mkdir -p "$root/usr/lib/code-server/lib"
  cp -a "$tree/node_modules" "$root/usr/lib/code-server/node_modules"
  rm -rf "$root/usr/lib/code-server/node_modules/.bin"
  install -m 0755 "$NODE_BIN" "$root/usr/lib/code-server/lib/node"
  cat > "$root/usr/bin/code-server" <<'EOS'
#!/bin/sh
# code-server from the npm package, run by the node it was built for.
exec /usr/lib/code-server/lib/node /usr/lib/code-server/node_modules/code-server/out/node/entry.js "$@"
EOS
  # The official entrypoint (ci/release-image/entrypoint.sh) without fixuid: scripts in
  # $ENTRYPOINTD run first, then dumb-init as PID 1 (signals, zombies) runs code-server with
  # every argument (the image passes --bind-addr 0.0.0.0:8080 .).
  cat > "$root/usr/bin/entrypoint.sh" <<'EOS'
#!/bin/sh
set -eu
if [ -d "${ENTRYPOINTD}" ]; then
  find "${ENTRYPOINTD}" -type f -executable -print -exec {} \;
fi
exec dumb-init /usr/bin/code-server "$@"
EOS
  chmod 0755 "$root/usr/bin/code-server" "$root/usr/bin/entrypoint.sh"

  # Every library node, the native modules and rg need must be in the image (prebuilt
  # modules for musl are never loaded here).
  local f unresolved=""
  while read -r f; do
    unresolved+=$(chroot "$root" ldd "${f#"$root"}" 2>&1 | grep 'not found' | sed "s|^|${f#"$root"}: |" || true)
  done < <(echo "$root/usr/lib/code-server/lib/node"
           find "$root/usr/lib/code-server" -type f \( -name '*.node' -o -path '*/@vscode/ripgrep/bin/rg' \) \
             ! -name '*musl*')
  [ -z "$unresolved" ] || die "libraries missing in the root filesystem: $unresolved"

  # Mount points csagent binds under the home: created here as coder's, or dockerd would
  # create the missing parents as root and coder could not write ~/.local.
  install -d -o 1000 -g 1000 "$root/home/coder/workspace" "$root/home/coder/.local" \
    "$root/home/coder/.local/share" "$root/home/coder/.local/share/code-server" "$root/home/coder/.config"

  say "importing $IMAGE ($(du -sh "$root" | cut -f1) root filesystem)"
  tar -C "$root" --numeric-owner -cf - . | docker import \
    --change 'ENTRYPOINT ["/usr/bin/entrypoint.sh", "--bind-addr", "0.0.0.0:8080", "."]' \
    --change 'USER 1000' \
    --change 'WORKDIR /home/coder' \
    --change 'ENV LANG=en_US.UTF-8 USER=coder ENTRYPOINTD=/entrypoint.d PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'EXPOSE 8080' \
    --change "LABEL csagent.built-locally=true csagent.code-server-build-hash=$image_key org.opencontainers.image.version=$VERSION" \
    - "$IMAGE" >/dev/null || die "docker import of $IMAGE failed"
  rm -rf "$root"
  trap - EXIT

  say "smoke test: native modules load inside $IMAGE (a terminal via node-pty, argon2)"
  local out
  out=$(docker run --rm --entrypoint /usr/lib/code-server/lib/node \
    -w /usr/lib/code-server/node_modules/code-server/lib/vscode "$IMAGE" --input-type=module -e '
      import { createRequire } from "module";
      const require = createRequire(process.cwd() + "/package.json");
      for (const m of ["@vscode/spdlog", "@parcel/watcher", "kerberos", "native-watchdog", "@vscode/deviceid"]) require(m);
      const argon2 = createRequire("/usr/lib/code-server/node_modules/code-server/package.json")("argon2");
      if (!(await argon2.hash("x")).startsWith("$argon2id$")) throw new Error("argon2 hash");
      const pty = require("node-pty").spawn("/bin/bash", ["-c", "echo pty-ok"], {});
      pty.onData((d) => process.stdout.write(d));' 2>&1) || die "native modules do not load inside $IMAGE: $out"
  case $out in *pty-ok*) ;; *) die "node-pty could not run a shell inside $IMAGE: $out" ;; esac
  smoke_healthz "$IMAGE"
}

# Starts $1 with a password and waits for /healthz inside it.
smoke_healthz() {
  local image=$1 cid ok=""
  say "smoke test: $image answers /healthz"
  cid=$(docker run -d --rm -e PASSWORD=smoke-test "$image") || die "docker run $image failed"
  for _ in $(seq 1 60); do
    if docker exec "$cid" curl -fsS http://localhost:8080/healthz >/dev/null 2>&1; then ok=1; break; fi
    sleep 1
  done
  if [ -z "$ok" ]; then
    docker logs "$cid" 2>&1 | tail -n 30 >&2 || true
    docker rm -f "$cid" >/dev/null 2>&1 || true
    die "$image did not answer http://localhost:8080/healthz within 60s"
  fi
  docker rm -f "$cid" >/dev/null 2>&1 || true
}

if [ "$existing" = "$image_key" ]; then
  say "$IMAGE is up to date ($image_key)"
else
  [ -z "$existing" ] || say "$IMAGE exists with build hash '$existing', rebuilding for $image_key"
  build_base
fi

# ---------------------------------------------------------------------------------------------
# The team image: images/Dockerfile on top of the stand-in
# ---------------------------------------------------------------------------------------------
say "docker build images/ FROM $IMAGE -> $TEAM_IMAGE"
team_args=(--build-arg "BASE=$IMAGE" --label "csagent.team-build-hash=$team_key")
# The stand-in trusts this machine's extra CAs; npm needs telling (see images/Dockerfile).
[ "${#extra_cas[@]}" = 0 ] ||
  team_args+=(--build-arg NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
run_logged "docker build images/" "$CACHE/team-build.log" \
  docker build --force-rm "${team_args[@]}" -t "$TEAM_IMAGE" images/

# The images the tags pointed at before are dangling now; drop them unless a container uses one.
docker image prune -f --filter "label=csagent.built-locally=true" >/dev/null 2>&1 || true

say "smoke test: the developer's tools in $TEAM_IMAGE"
tools=$(docker run --rm --entrypoint /bin/bash "$TEAM_IMAGE" -lc '
  set -e
  [ "$(id -u):$(id -g) $(getent passwd coder | cut -d: -f7)" = "1000:1000 /bin/bash" ] ||
    { echo "not user coder 1000:1000 with /bin/bash: $(id), $(getent passwd coder)"; exit 1; }
  claude --version; git --version; ssh -V 2>&1; curl --version | head -n1; jq --version
  rg --version | head -n1; python3 --version; gcc --version | head -n1; make --version | head -n1' 2>&1) ||
  die "a developer tool is missing or broken in $TEAM_IMAGE: $tools"
printf '%s\n' "$tools" | sed 's/^/  /'
smoke_healthz "$TEAM_IMAGE"
for i in "$IMAGE" "$TEAM_IMAGE"; do
  say "$i: $(($(docker image inspect -f '{{ .Size }}' "$i") / 1024 / 1024)) MiB"
done
say "built $IMAGE ($image_key) and $TEAM_IMAGE ($team_key)"
