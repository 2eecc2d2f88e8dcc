#!/usr/bin/env bash
# Builds the csagent .deb and prints its path on stdout (progress goes to stderr):
#
#   deb=$(bash scripts/build-deb.sh [--deb-version VERSION] [--out DIR])
#
# 1. cargo build --release (the binary cargo-deb packages);
# 2. the man pages and shell completions from the CLI definition
#    (`cargo run --example gen-assets`, debug profile: CI has built it for the tests);
# 3. a Debian changelog entry for the version being built;
# 4. cargo deb --no-build, with [package.metadata.deb] from Cargo.toml.
#
# Version: Cargo.toml's, Debian revision 1 (0.1.0 -> 0.1.0-1); --deb-version overrides the
# whole string. Output: DIR, default $CARGO_TARGET_DIR/debian (target/debian). Generated
# inputs go to target/deb-assets/ in the checkout (rewritten on every run). Needs cargo-deb:
# `cargo install cargo-deb --locked`. Idempotent: running it again rebuilds the same files.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-deb: $*" >&2; exit 1; }
say() { echo "build-deb: $*" >&2; }

deb_version=""
out_dir="${CARGO_TARGET_DIR:-target}/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --deb-version) [ $# -ge 2 ] || die "--deb-version needs a value"; deb_version=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

cargo deb --version >/dev/null 2>&1 || die "cargo-deb is not installed: cargo install cargo-deb --locked"
command -v python3 >/dev/null || die "python3 is needed to read cargo metadata"

# Version and maintainer, straight from Cargo.toml.
read -r crate_version maintainer < <(
  cargo metadata --no-deps --format-version 1 --locked |
    python3 -c '
import json, sys
pkg = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "csagent")
print(pkg["version"], pkg["metadata"]["deb"]["maintainer"])
'
) || die "cannot read the csagent package metadata (cargo metadata)"
[ -n "$crate_version" ] || die "no version in Cargo.toml"
[ -n "$deb_version" ] || deb_version="${crate_version}-1"

say "building csagent ${crate_version} (release)"
cargo build --release --locked --bin csagent >&2 || die "cargo build --release failed"

assets=target/deb-assets
say "generating man pages and completions into ${assets}/"
rm -rf "$assets"
mkdir -p "$assets"
cargo run --quiet --locked --example gen-assets -- "$assets" >/dev/null ||
  die "cargo run --example gen-assets failed"
ls "$assets"/man/*.1 >/dev/null 2>&1 || die "gen-assets wrote no man page"
gzip -9n "$assets"/man/*.1

# The changelog entry for this build, dated by the last commit (reproducible), else now.
commit=$(git describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)
when=$(git log -1 --format=%ct 2>/dev/null || true)
when=${SOURCE_DATE_EPOCH:-${when:-$(date +%s)}}
cat >"$assets/changelog" <<EOF
csagent (${deb_version}) unstable; urgency=medium

  * csagent ${crate_version}, built from commit ${commit}. The changes are in the
    project's history.

 -- ${maintainer}  $(LC_ALL=C date -u -R -d "@${when}")
EOF

mkdir -p "$out_dir"
say "packaging ${deb_version} into ${out_dir}/"
deb=$(cargo deb --no-build --locked --deb-version "$deb_version" --output "$out_dir" | tail -n 1) ||
  die "cargo deb failed"
[ -f "$deb" ] || die "cargo deb did not report a .deb (got: ${deb:-nothing})"
say "built $deb"
echo "$deb"
