#!/usr/bin/env bash
# Lints the CloudFormation that the `infra` crate emits, for 1, 8, 40 and 100 developers:
#   1. generate it with `cargo run -q -p infra --` (JSON; YAML too for 8 developers; the
#      8-developer templates with the generation-time option --password-rotation-lambda-arn
#      and the schedule and idle stop on, and with SSO on: --sso oidc (JSON) and --sso
#      cognito (YAML)); 40 and 100 developers on several hosts (the capacity model's 10 per
#      t3.2xlarge, and 8 per host) are a parent and child templates written with --out-dir,
#      every one of which is checked,
#   2. cfn-lint: 0 errors and 0 warnings (exit 0),
#   3. checkov: 0 failed checks; skips only where the template's resource Metadata declares
#      them (`checkov: skip: [{id, comment}]`), printed with their reasons.
# What these tools cannot see is checked in Rust, in `cargo test --workspace`:
# infra/tests/template.rs (structure; every checkov skip carries a written reason) and
# tests/infra_deploy.rs (moto creates each of these stacks: CREATE_COMPLETE, outputs, log
# groups, the data volume attachment).
#
# Needs cfn-lint and checkov on PATH (the CI puts the venv's bin first;
# /var/cache/csagent-ci/venv/bin is tried too). Honours CARGO_TARGET_DIR. Exits non-zero on any
# failure, after a summary.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV_BIN=/var/cache/csagent-ci/venv/bin
if { ! command -v cfn-lint || ! command -v checkov; } >/dev/null 2>&1 && [ -x "$VENV_BIN/checkov" ]; then
  PATH="$VENV_BIN:$PATH"
fi
for tool in cfn-lint checkov cargo; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check-infra: $tool not found on PATH" >&2
    exit 2
  fi
done

WORK=$(mktemp -d /tmp/check-infra.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

DOMAIN=dev.example.com
ZONE_PLACEHOLDER=Z0123456789ABCDEFGHIJ

echo "check-infra: building infra"
cargo build -q -p infra

infra() {
  cargo run -q -p infra -- "$@"
}

SUMMARY=()
FAILED=0
record() { # name result
  SUMMARY+=("$(printf '%-24s %s' "$1" "$2")")
}

# Runs checkov; prints the declared skips with their reasons, every failed check and the
# counts; returns non-zero on a failed check or when checkov itself fails.
run_checkov() { # out -f FILE | -d DIR
  local out=$1
  shift
  local rc=0
  checkov "$@" --framework cloudformation --skip-download --compact -o cli >"$out" 2>"$out.err" || rc=$?
  local counts
  counts=$(sed -nE 's/^Passed checks: ([0-9]+), Failed checks: ([0-9]+), Skipped checks: ([0-9]+).*/\1 \2 \3/p' "$out" | head -1)
  if [ -z "$counts" ]; then
    echo "  checkov gave no results (exit $rc):"
    tail -20 "$out.err" | sed 's/^/  /'
    return 1
  fi
  # The cli report: `Check: ID: "name"`, then `\tFAILED|PASSED|SKIPPED for resource: R`, and
  # for a skip `\tSuppress comment: reason`. Skips print once per check id, sorted.
  awk '
    /^Check: / { id = $2; sub(/:$/, "", id); name = $0; sub(/^Check: [^ ]+ /, "", name); gsub(/"/, "", name); skip = "" }
    /^\tFAILED for resource: / { r = $0; sub(/^\tFAILED for resource: /, "", r); print "  FAILED " id " " r ": " name > "/dev/stderr" }
    /^\tSKIPPED for resource: / { skip = id }
    /^\tSuppress comment: / && skip != "" && !seen[skip]++ { c = $0; sub(/^\tSuppress comment: /, "", c); print "  skip " skip ": " c }
  ' "$out" 2>"$out.failed" | LC_ALL=C sort -s -t: -k1,1
  cat "$out.failed"
  local passed failed skipped
  read -r passed failed skipped <<<"$counts"
  echo "  checkov: passed $passed, failed $failed, skipped $skipped"
  if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "  checkov exited $rc without a failed check"
  fi
  [ "$failed" -eq 0 ] && [ "$rc" -eq 0 ]
}

check_case() { # developers format options
  local developers=$1 format=$2 options=$3
  local label="dev=$developers $format $options"
  local file="$WORK/env-$developers-$options.$format"
  # Options that add resources at generation time (not Parameters).
  local extra=()
  case "$options" in
    all)
      extra=(--password-rotation-lambda-arn "arn:aws:lambda:ap-southeast-7:123456789012:function:csagent-ci-rotate"
        --schedule-start "cron(0 8 ? * MON-FRI *)" --schedule-stop "cron(0 20 ? * MON-FRI *)"
        --schedule-timezone Europe/Berlin --idle-stop-hours 2)
      ;;
    sso-oidc) # SSO is a Parameter; these set its defaults, so the linters see it on
      extra=(--sso oidc --oidc-issuer https://idp.example.com
        --oidc-authorization-endpoint https://idp.example.com/authorize
        --oidc-token-endpoint https://idp.example.com/token
        --oidc-user-info-endpoint https://idp.example.com/userinfo
        --oidc-client-id csagent-ci --oidc-client-secret-id csagent-ci-sso/oidc-client-secret)
      ;;
    sso-cognito)
      extra=(--sso cognito)
      ;;
  esac
  echo
  echo "=== $label (generation options: $options) ==="
  case "$options" in
    hosts*) # several hosts: a parent and child templates
      local dir="$WORK/out-$developers-$options"
      local per_host=()
      [ "$options" = hosts-8 ] && per_host=(--developers-per-host 8)
      # A restore of hosts 1 and 3 (host 2 blank): per-host snapshot parameters set.
      [ "$options" = hosts ] && per_host=(--data-volume-snapshot-id snap-0123456789abcdef0,,snap-89abcdef)
      if ! infra --developers "$developers" --domain "$DOMAIN" --hosted-zone-id "$ZONE_PLACEHOLDER" \
        --format "$format" "${per_host[@]}" --out-dir "$dir" \
        --template-url-prefix https://csagent-ci-templates.s3.amazonaws.com/env/ >"$WORK/written.txt"; then
        record "$label" "FAIL: generation"
        FAILED=1
        return
      fi
      sed 's/^/  wrote /' "$WORK/written.txt"
      lint_one "$label" "$dir"
      return
      ;;
  esac
  if ! infra --developers "$developers" --domain "$DOMAIN" --hosted-zone-id "$ZONE_PLACEHOLDER" \
    --format "$format" "${extra[@]}" >"$file"; then
    record "$label" "FAIL: generation"
    FAILED=1
    return
  fi
  lint_one "$label" "$file"
}

lint_one() { # label file-or-directory (a parent and its child templates)
  local label=$1 file=$2
  local files=("$file") checkov_target=(-f "$file")
  if [ -d "$file" ]; then
    files=("$file"/*)
    checkov_target=(-d "$file")
  else
    echo "  template: $(wc -c <"$file") bytes"
  fi

  local lint_rc=0
  cfn-lint -- "${files[@]}" >"$WORK/lint.txt" 2>&1 || lint_rc=$?
  local lint_findings
  lint_findings=$(grep -cE '^[EWI][0-9]{4} ' "$WORK/lint.txt" || true)
  if [ "$lint_rc" -ne 0 ]; then
    sed 's/^/  /' "$WORK/lint.txt"
    record "$label" "FAIL: cfn-lint exit $lint_rc, $lint_findings finding(s)"
    FAILED=1
  else
    echo "  cfn-lint: 0 errors, 0 warnings"
  fi

  local checkov_ok=1
  run_checkov "$WORK/checkov.txt" "${checkov_target[@]}" || checkov_ok=0
  if [ "$checkov_ok" -ne 1 ]; then
    record "$label" "FAIL: checkov"
    FAILED=1
  fi
  if [ "$lint_rc" -eq 0 ] && [ "$checkov_ok" -eq 1 ]; then
    record "$label" "ok: cfn-lint 0/0, checkov 0 failed"
  fi
}

check_case 1 json none
check_case 8 json all
check_case 8 yaml all
check_case 40 json hosts
check_case 100 json hosts-8
check_case 8 json sso-oidc
check_case 8 yaml sso-cognito

echo
echo "=== check-infra summary ==="
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
  echo "check-infra: FAILED"
  exit 1
fi
echo "check-infra: all passed"
