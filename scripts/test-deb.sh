#!/usr/bin/env bash
# Package tests for the csagent .deb (issue 9). CI runs it after the cargo tests, as root,
# on a Debian/Ubuntu machine WITHOUT systemd as PID 1, with docker.io, lintian, dpkg-dev,
# systemd (for systemd-analyze), curl and cargo-deb installed.
#
#   sudo bash scripts/test-deb.sh
#
# It builds the package (scripts/build-deb.sh), installs, upgrades and purges it on this
# machine, runs the infra user-data script against it, and leaves the machine as it found
# it (the package purged). Any failed check stops it with "FAIL: ..." and exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

PKG=csagent
UNIT=/lib/systemd/system/csagent.service
CONFIG=/etc/csagent/config.toml
WANTS_LINK=/etc/systemd/system/multi-user.target.wants/csagent.service

passed=()
step() { printf '\n== %s ==\n' "$*"; }
ok() { passed+=("$*"); echo "ok: $*"; }
fail() {
  echo >&2
  echo "FAIL: $*" >&2
  exit 1
}

# ---- preconditions -------------------------------------------------------------------
[ "$(id -u)" = 0 ] || fail "must run as root (dpkg -i / --purge)"
for tool in dpkg dpkg-deb lintian systemd-analyze curl python3 cargo; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
cargo deb --version >/dev/null 2>&1 || fail "cargo-deb is not installed: cargo install cargo-deb --locked"
if [ -d /run/systemd/system ]; then
  fail "systemd is running here: this test installs the package for real, and postinst would start the agent; run it on a CI machine or in a container without systemd"
fi
# Whether dpkg has the package in any state but "not installed" (incl. config-files).
present() {
  case "$(dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true)" in
    "" | not-installed) return 1 ;;
    *) return 0 ;;
  esac
}
if present; then
  fail "package $PKG is already present on this machine; purge it first (dpkg --purge $PKG)"
fi
for p in /etc/csagent /var/lib/csagent; do
  [ ! -e "$p" ] || fail "$p exists although $PKG is not installed; remove it first (the purge check needs a clean start)"
done

# The package keeps its group on purge (Debian practice); the test removes it again if it
# was not there before, so the machine ends as it started.
group_existed=no
getent group csagent >/dev/null && group_existed=yes
work=$(mktemp -d /tmp/csagent-test-deb.XXXXXX)
cleanup() {
  local rc=$?
  if present; then
    echo "cleanup: purging $PKG" >&2
    dpkg --purge "$PKG" >/dev/null 2>&1 || echo "cleanup: dpkg --purge $PKG failed; purge it by hand" >&2
  fi
  if [ "$group_existed" = no ] && getent group csagent >/dev/null; then
    groupdel csagent || echo "cleanup: could not remove the csagent group the test created" >&2
  fi
  rm -rf "$work"
  if [ "$rc" -ne 0 ]; then
    echo "test-deb: FAILED after ${#passed[@]} passed checks" >&2
  fi
}
trap cleanup EXIT

# ---- helpers ---------------------------------------------------------------------------
crate_version=$(cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="csagent"))')
version1="${crate_version}-1"
version2="${crate_version}+test2-1"
version3="${crate_version}+test3-1"

status_of() { dpkg-query -W -f='${Status} ${Version}' "$PKG" 2>/dev/null || true; }
assert_installed() {
  local want=$1 got
  got=$(status_of)
  [ "$got" = "install ok installed $want" ] || fail "expected '$PKG' installed at $want, dpkg says: '${got:-not installed}'"
}
owner_mode() { stat -c '%U:%G %a' "$1"; }
assert_config_perms() {
  local got
  got=$(owner_mode "$CONFIG")
  [ "$got" = "root:csagent 640" ] || fail "$CONFIG is $got, want root:csagent 640"
}
check_config_ok() {
  # check-config on the installed config (default path) must exit 0.
  local out rc=0
  out=$(csagent check-config 2>&1) || rc=$?
  [ "$rc" = 0 ] || fail "csagent check-config on $CONFIG exited $rc: $out"
  echo "$out"
}
developer_count() {
  csagent check-config --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["developers"]))'
}
# systemd-analyze verify must exit 0 and print nothing at all (warnings count as failures).
verify_unit() {
  local unit=$1 out rc=0
  shift
  out=$(systemd-analyze verify "$@" "$unit" 2>&1) || rc=$?
  if [ "$rc" != 0 ] || [ -n "$out" ]; then
    fail "systemd-analyze verify $* $unit (exit $rc): $out"
  fi
}
run_lintian() {
  local deb=$1 out rc=0
  out=$(lintian --fail-on error,warning --display-level '>=warning' --tag-display-limit 0 "$deb" 2>&1) || rc=$?
  [ -z "$out" ] || echo "$out"
  [ "$rc" = 0 ] || fail "lintian reports errors or warnings for $(basename "$deb") (exit $rc)"
  if printf '%s\n' "$out" | grep -qE '^[EW]: '; then
    fail "lintian printed errors/warnings for $(basename "$deb")"
  fi
}
install_deb() {
  # dpkg -i DEB [DPKG_OPTIONS...], stdin closed: a conffile prompt fails instead of hanging.
  local deb=$1 opt apt_opts=()
  shift
  if ! dpkg -i "$@" "$deb" </dev/null; then
    echo "dpkg -i failed (missing dependencies?); trying apt-get install -y ./$(basename "$deb")" >&2
    for opt in "$@"; do apt_opts+=(-o "Dpkg::Options::=$opt"); done
    (cd "$(dirname "$deb")" && apt-get install -y -q "${apt_opts[@]}" "./$(basename "$deb")" </dev/null) ||
      fail "neither dpkg -i nor apt-get install could install $deb"
  fi
}

# ---- the unit, before any packaging -------------------------------------------------------
step "systemd unit (source)"
unit_src=systemd/csagent.service
# Anything that gives the service its own mount namespace hides its mount of the data
# volume from dockerd and the host (systemd.exec(5), PrivateMounts=); ProtectClock implies a
# device allow-list that blocks the data device. See the comments in the unit.
forbidden='^(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectProc|ProcSubset|PrivateMounts|ReadOnlyPaths|ReadWritePaths|InaccessiblePaths|ExecPaths|NoExecPaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|MountAPIVFS|RootDirectory|RootImage|ProtectClock|DeviceAllow|DevicePolicy|PrivateNetwork|DynamicUser|User)='
if bad=$(grep -nE "$forbidden" "$unit_src"); then
  fail "$unit_src sets a directive that would break mounting the data volume: $bad"
fi
ok "unit has no mount-namespace, device-policy or non-root directive"
for want in 'Type=notify' 'NotifyAccess=main' 'Restart=always' 'RestartPreventExitStatus=2' \
            'Requires=docker.service' 'RuntimeDirectory=csagent' 'StateDirectory=csagent' \
            'ConfigurationDirectory=csagent' 'KillMode=mixed'; do
  grep -qx "$want" "$unit_src" || fail "$unit_src lacks $want"
done
grep -qE '^After=.*docker\.service' "$unit_src" || fail "$unit_src lacks After=docker.service"
grep -qE '^After=.*network-online\.target' "$unit_src" || fail "$unit_src lacks After=network-online.target"
grep -qE '^WatchdogSec=' "$unit_src" || fail "$unit_src lacks WatchdogSec="
ok "unit has the required service settings"
# The binary does not exist before the package is installed: verify a copy whose commands
# point at an existing program (the installed unit is verified as is further down).
mkdir -p "$work/unit"
sed 's#/usr/bin/csagent#/bin/true#g' "$unit_src" >"$work/unit/csagent.service"
verify_unit "$work/unit/csagent.service" --man=no
ok "systemd-analyze verify (source unit, ExecStart pointed at /bin/true) is clean"

# ---- build ------------------------------------------------------------------------------
step "build $version1"
deb1=$(bash scripts/build-deb.sh --out "$work/v1") || fail "scripts/build-deb.sh failed"
[ "$(dpkg-deb -f "$deb1" Version)" = "$version1" ] || fail "$deb1 has version $(dpkg-deb -f "$deb1" Version), want $version1 (from Cargo.toml)"
ok "built $(basename "$deb1"), version $version1 from Cargo.toml"

step "package contents"
dpkg-deb -I "$deb1"
contents=$(dpkg-deb -c "$deb1")
echo "$contents"
for path in ./usr/bin/csagent ./lib/systemd/system/csagent.service ./etc/csagent/config.toml \
            ./usr/share/man/man1/csagent.1.gz ./usr/share/man/man1/csagent-run.1.gz \
            ./usr/share/bash-completion/completions/csagent \
            ./usr/share/zsh/vendor-completions/_csagent \
            ./usr/share/fish/vendor_completions.d/csagent.fish \
            ./usr/share/doc/csagent/copyright ./usr/share/doc/csagent/changelog.Debian.gz; do
  awk '{print $6}' <<<"$contents" | grep -qx -- "$path" || fail "$(basename "$deb1") lacks $path"
done
grep -E ' \./etc/csagent/config\.toml$' <<<"$contents" | grep -qE '^-rw-r----- (0/0|root/root) ' ||
  fail "etc/csagent/config.toml is not packaged as -rw-r----- root:root"
dpkg-deb --ctrl-tarfile "$deb1" | tar -xOf - ./conffiles | grep -qx /etc/csagent/config.toml ||
  fail "/etc/csagent/config.toml is not a conffile"
depends=$(dpkg-deb -f "$deb1" Depends)
for dep in 'docker.io | docker-ce' e2fsprogs ca-certificates iptables adduser libc6; do
  grep -qF -- "$dep" <<<"$depends" || fail "Depends lacks '$dep': $depends"
done
[ "$(dpkg-deb -f "$deb1" Recommends)" = xfsprogs ] || fail "Recommends is not xfsprogs"
ok "package has binary, unit, conffile (0640), man pages, completions, copyright, changelog; Depends/Recommends as specified"

step "lintian $(basename "$deb1")"
run_lintian "$deb1"
ok "lintian: 0 errors, 0 warnings"

# ---- install ----------------------------------------------------------------------------
step "install $version1 (dpkg -i)"
# Which of the package's directories exist before it is installed (/usr/share/man/man1, ...):
# those belong to the system, and purge must leave them; every other path must go.
mapfile -t pkg_dirs < <(dpkg-deb -c "$deb1" | awk '$1 ~ /^d/ {print $6}' | sed 's#^\.##; s#/$##' | grep -v '^$')
preexisting=()
for d in "${pkg_dirs[@]}"; do
  [ -d "$d" ] && preexisting+=("$d")
done
fstab_before=$(sha256sum /etc/fstab 2>/dev/null || echo none)
install_deb "$deb1"
assert_installed "$version1"
[ "$(csagent --version)" = "csagent $crate_version" ] || fail "csagent --version printed '$(csagent --version)', want 'csagent $crate_version'"
ok "csagent --version prints csagent $crate_version"
check_config_ok
ok "csagent check-config accepts the shipped $CONFIG"
getent group csagent >/dev/null || fail "postinst did not create the csagent group"
assert_config_perms
ok "postinst created group csagent; $CONFIG is root:csagent 0640"
[ -L "$WANTS_LINK" ] || fail "postinst did not enable the unit ($WANTS_LINK missing)"
ok "unit enabled without a running systemd ($WANTS_LINK)"
# The installed unit as is: ExecStart exists now, and man:csagent(1) resolves when man is here.
if command -v man >/dev/null; then
  verify_unit "$UNIT"
  ok "systemd-analyze verify $UNIT is clean (incl. Documentation=man:csagent(1))"
else
  verify_unit "$UNIT" --man=no
  ok "systemd-analyze verify $UNIT is clean (man not installed: Documentation not checked)"
fi
for f in /usr/share/man/man1/csagent*.1.gz; do
  if command -v man >/dev/null; then
    warnings=$(man --warnings -E UTF-8 -l -Tutf8 -Z "$f" 2>&1 >/dev/null) || fail "man cannot render $f"
    [ -z "$warnings" ] || fail "man page warnings for $f: $warnings"
  fi
done
bash -n /usr/share/bash-completion/completions/csagent || fail "bash completion has a syntax error"
ok "man pages render without warnings; bash completion parses"

# ---- upgrade keeps an edited config --------------------------------------------------------
step "edit the config, upgrade to $version2"
[ "$(developer_count)" = 8 ] || fail "shipped config does not define 8 developers"
sed -i 's/^count = 8$/count = 3/' "$CONFIG"
[ "$(developer_count)" = 3 ] || fail "editing developers.count had no effect"
edited=$(sha256sum <"$CONFIG")
deb2=$(bash scripts/build-deb.sh --deb-version "$version2" --out "$work/v2") || fail "rebuilding as $version2 failed"
dpkg --compare-versions "$version2" gt "$version1" || fail "$version2 is not newer than $version1"
run_lintian "$deb2"
install_deb "$deb2"
assert_installed "$version2"
[ "$(sha256sum <"$CONFIG")" = "$edited" ] || fail "the upgrade changed the edited $CONFIG"
[ "$(developer_count)" = 3 ] || fail "after the upgrade check-config does not see the edit"
assert_config_perms
for leftover in "$CONFIG.dpkg-new" "$CONFIG.dpkg-dist" "$CONFIG.dpkg-old"; do
  [ ! -e "$leftover" ] || fail "unexpected $leftover after an upgrade that did not change the conffile"
done
[ -L "$WANTS_LINK" ] || fail "the upgrade lost the unit's enablement"
ok "upgrade $version1 -> $version2 with dpkg -i (no prompt, no force option) keeps the edited config"

# A newer package whose default config changed while the admin's copy is edited: dpkg
# would ask; unattended upgrades answer with --force-confdef --force-confold and must keep
# the admin's file. The package is $deb2 with one comment added to the shipped config.
step "upgrade to $version3, whose shipped config changed"
mkdir -p "$work/v3/root"
dpkg-deb -R "$deb2" "$work/v3/root"
echo "# (test: the shipped default changed in $version3)" >>"$work/v3/root/etc/csagent/config.toml"
sed -i "s/^Version: .*/Version: $version3/" "$work/v3/root/DEBIAN/control"
(cd "$work/v3/root" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z |
  xargs -0 md5sum | sed 's# \./# #' >DEBIAN/md5sums)
deb3="$work/v3/csagent_${version3}_amd64.deb"
dpkg-deb --root-owner-group -b "$work/v3/root" "$deb3" >/dev/null
install_deb "$deb3" --force-confdef --force-confold
assert_installed "$version3"
[ "$(sha256sum <"$CONFIG")" = "$edited" ] || fail "--force-confold upgrade replaced the edited $CONFIG"
[ -f "$CONFIG.dpkg-dist" ] || fail "the new default was not put next to it as $CONFIG.dpkg-dist"
assert_config_perms
ok "upgrade with a changed default and --force-confdef --force-confold keeps the edit (new default in .dpkg-dist)"

# ---- purge ------------------------------------------------------------------------------
step "purge"
mapfile -t files < <(dpkg -L "$PKG")
[ "${#files[@]}" -gt 10 ] || fail "dpkg -L $PKG lists only ${#files[@]} paths"
# State the agent would have written, to show purge removes it and not just empty dirs.
mkdir -p /var/lib/csagent/logs && echo '{}' >/var/lib/csagent/logs/checkpoint.json
containers_before=$(docker ps -aq 2>/dev/null | sort || true)
dpkg --purge "$PKG" </dev/null || fail "dpkg --purge $PKG failed"
! present || fail "after purge dpkg still has $PKG: $(status_of)"
remaining=()
shared=0
for f in "${files[@]}"; do
  [ "$f" = "/." ] && continue
  if [ -d "$f" ]; then
    # A directory may stay if it was there before the package, or another package owns it.
    if printf '%s\n' "${preexisting[@]}" | grep -qxF -- "$f" || dpkg-query -S "$f" >/dev/null 2>&1; then
      shared=$((shared + 1))
      continue
    fi
    remaining+=("$f/")
  elif [ -e "$f" ] || [ -L "$f" ]; then
    remaining+=("$f")
  fi
done
[ "${#remaining[@]}" = 0 ] || fail "after purge these package paths remain: ${remaining[*]}"
ok "purge removed every path dpkg -L listed (${#files[@]} paths; $shared system directories stay)"
for p in /etc/csagent /var/lib/csagent "$WANTS_LINK" /var/lib/systemd/deb-systemd-helper-enabled/csagent.service.dsh-also; do
  if [ -e "$p" ] || [ -L "$p" ]; then fail "$p remains after purge"; fi
done
ok "purge removed /etc/csagent, /var/lib/csagent (with state in it) and the unit's enablement"
[ "$(sha256sum /etc/fstab 2>/dev/null || echo none)" = "$fstab_before" ] || fail "/etc/fstab changed during install/upgrade/purge"
[ "$(docker ps -aq 2>/dev/null | sort || true)" = "$containers_before" ] || fail "the set of docker containers changed during purge"
ok "purge left /etc/fstab and the docker containers alone"
getent group csagent >/dev/null || fail "purge removed the csagent group (it is meant to stay)"

# ---- the infra user-data script --------------------------------------------------------------
step "infra user data installs the package"
# The script as EC2 would run it, with the .deb URL pointed at the local file, and two
# stubs in front of PATH: systemctl (no systemd here; records calls) and `apt-get update`
# (no network needed; every other apt-get call is the real one).
developers=3
userdata="$work/user-data.sh"
cargo run -q --locked -p infra -- --print-user-data --developers "$developers" --deb-url "file://$deb1" >"$userdata" ||
  fail "cargo run -p infra -- --print-user-data failed (does infra have --print-user-data and --deb-url?)"
cargo run -q --locked -p infra -- --print-agent-config --developers "$developers" >"$work/agent-config.toml" ||
  fail "cargo run -p infra -- --print-agent-config failed"
grep -qF "file://$deb1" "$userdata" || fail "the user data does not use the --deb-url given"
mkdir -p "$work/stubs"
cat >"$work/stubs/systemctl" <<EOF
#!/bin/sh
echo "systemctl \$*" >>"$work/systemctl.calls"
exit 0
EOF
cat >"$work/stubs/apt-get" <<EOF
#!/bin/sh
if [ "\$1" = update ] || { [ "\$1" = -q ] && [ "\$2" = update ]; }; then
  echo "apt-get \$* (stubbed: no network)" >>"$work/apt.calls"
  exit 0
fi
exec /usr/bin/apt-get "\$@"
EOF
chmod +x "$work/stubs/systemctl" "$work/stubs/apt-get"
: >"$work/systemctl.calls"
rc=0
PATH="$work/stubs:$PATH" bash "$userdata" </dev/null >"$work/user-data.log" 2>&1 || rc=$?
cat "$work/user-data.log"
[ "$rc" = 0 ] || fail "the user-data script exited $rc (log above)"
assert_installed "$version1"
cmp -s "$CONFIG" "$work/agent-config.toml" ||
  fail "$CONFIG is not the config infra --print-agent-config prints: $(diff "$work/agent-config.toml" "$CONFIG" || true)"
check_config_ok
# The user data names the stack's developer-set parameter instead of listing developers
# (issue 18.1): the agent reads the $developers developers from SSM, check-config shows where.
param=$(csagent check-config --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["developer_set"]["parameter"] or "")')
case "$param" in
  /*/csagent/host-1/developers) ;;
  *) fail "check-config does not show the developer-set parameter the user data wrote (got '$param')" ;;
esac
assert_config_perms
[ ! -s "$work/systemctl.calls" ] || fail "without systemd nothing may call systemctl, but: $(cat "$work/systemctl.calls")"
ok "user data (file:// URL, apt-get update and systemctl stubbed) installed $version1 and wrote a config check-config accepts (its $developers developers in the SSM parameter it names, root:csagent 0640)"

step "leave the machine clean"
dpkg --purge "$PKG" </dev/null >/dev/null || fail "final dpkg --purge failed"
for p in /etc/csagent /var/lib/csagent /usr/bin/csagent "$UNIT"; do
  [ ! -e "$p" ] || fail "$p remains after the final purge"
done
ok "package purged again"

printf '\n== summary: %d checks passed ==\n' "${#passed[@]}"
printf '  - %s\n' "${passed[@]}"
