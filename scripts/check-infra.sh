#!/usr/bin/env bash
# Checks the CloudFormation that the `infra` crate emits, for 1, 8 and 40 developers:
#   1. generate it with `cargo run -q -p infra --` (JSON; YAML too for 8 developers),
#   2. cfn-lint: 0 errors and 0 warnings (exit 0),
#   3. checkov: 0 failed checks; skips only where the template's resource Metadata declares
#      them (`checkov: skip: [{id, comment}]`), and every skip must carry a written reason,
#   4. create the stack in moto (boto3 against AWS_ENDPOINT_URL, dummy credentials, region
#      ap-southeast-7) and require CREATE_COMPLETE; otherwise print the failure reasons.
#
# Needs cfn-lint, checkov and a python with boto3 on PATH (the CI puts the venv's bin first;
# /var/cache/csagent-ci/venv/bin is tried too). AWS_ENDPOINT_URL should point at a running
# moto_server; when it is unset this script starts its own on a free 127.0.0.1 port and stops
# it on exit. Honours CARGO_TARGET_DIR. Exits non-zero on any failure, after a summary.
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
PYTHON=""
for candidate in python3 "$(dirname "$(command -v cfn-lint)")/python3" "$VENV_BIN/python3"; do
  if "$candidate" -c 'import boto3' >/dev/null 2>&1; then
    PYTHON=$candidate
    break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "check-infra: no python with boto3 found (install moto[server] into the venv)" >&2
  exit 2
fi

WORK=$(mktemp -d /tmp/check-infra.XXXXXX)
MOTO_PID=""
cleanup() {
  if [ -n "$MOTO_PID" ]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  MOTO_SERVER=$(command -v moto_server || true)
  [ -n "$MOTO_SERVER" ] || MOTO_SERVER="$(dirname "$PYTHON")/moto_server"
  if [ ! -x "$MOTO_SERVER" ]; then
    echo "check-infra: AWS_ENDPOINT_URL is unset and moto_server was not found" >&2
    exit 2
  fi
  PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$MOTO_SERVER" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
  for _ in $(seq 1 100); do
    if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1)' \
      "$AWS_ENDPOINT_URL" >/dev/null 2>&1; then
      break
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "check-infra: moto_server exited:" >&2
      cat "$WORK/moto.log" >&2
      exit 2
    fi
    sleep 0.2
  done
  echo "check-infra: started moto_server on $AWS_ENDPOINT_URL (pid $MOTO_PID)"
fi
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_DEFAULT_REGION=ap-southeast-7 AWS_REGION=ap-southeast-7

DOMAIN=dev.example.com
ZONE_PLACEHOLDER=Z0123456789ABCDEFGHIJ
MOTO_AMI_PARAMETER=/csagent-ci/ubuntu-2204-ami

echo "check-infra: building infra"
cargo build -q -p infra

infra() {
  cargo run -q -p infra -- "$@"
}

SUMMARY=()
FAILED=0
record() { # name result
  SUMMARY+=("$(printf '%-16s %s' "$1" "$2")")
}

# Prints the checkov skips declared in a template and fails when one has no written reason.
check_skip_reasons() {
  "$PYTHON" - "$1" <<'PY'
import json, sys
try:
    import yaml  # noqa: F401  (only needed for .yaml)
except ImportError:
    yaml = None
path = sys.argv[1]
with open(path) as f:
    if path.endswith(".json"):
        template = json.load(f)
    else:
        template = yaml.safe_load(f)
bad = 0
seen = {}
for name, res in template["Resources"].items():
    for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
        comment = (skip.get("comment") or "").strip()
        if len(comment) < 20:
            print(f"  skip {skip.get('id')} on {name} has no written reason", file=sys.stderr)
            bad += 1
        seen.setdefault(skip.get("id"), comment)
for check, comment in sorted(seen.items()):
    print(f"  skip {check}: {comment}")
sys.exit(1 if bad else 0)
PY
}

# Runs checkov; prints failures; exits non-zero on any failed check.
run_checkov() {
  local file=$1 out=$2
  local rc=0
  checkov -f "$file" --framework cloudformation --skip-download --compact -o json >"$out" 2>"$out.err" || rc=$?
  "$PYTHON" - "$out" "$rc" <<'PY'
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
try:
    data = json.load(open(path))
except Exception as e:  # checkov crashed or printed no JSON
    print(f"  checkov gave no JSON (exit {rc}): {e}")
    sys.exit(1)
if isinstance(data, list):
    reports = data
else:
    reports = [data]
passed = failed = skipped = 0
for report in reports:
    results = report.get("results", {})
    passed += len(results.get("passed_checks", []))
    skipped += len(results.get("skipped_checks", []))
    for c in results.get("failed_checks", []):
        failed += 1
        print(f"  FAILED {c['check_id']} {c['resource']}: {c['check_name']}")
    summary = report.get("summary", {})
    failed = max(failed, summary.get("failed", 0))
print(f"  checkov: passed {passed}, failed {failed}, skipped {skipped}")
if rc != 0 and not failed:
    print(f"  checkov exited {rc} without a failed check")
sys.exit(1 if failed or rc != 0 else 0)
PY
}

# Creates the stack in moto and waits for CREATE_COMPLETE.
run_moto() {
  local file=$1 developers=$2 options=$3
  "$PYTHON" - "$file" "$developers" "$options" "$DOMAIN" "$MOTO_AMI_PARAMETER" <<'PY'
import json, os, sys, time, uuid
import boto3

def report(kind, value, tb):
    # One clear line instead of a traceback (e.g. moto not reachable, API error).
    print(f"  moto: {kind.__name__}: {value}")
sys.excepthook = report

path, developers, options, domain, ami_parameter = sys.argv[1:6]
developers = int(developers)
kw = dict(endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="ap-southeast-7")
cfn = boto3.client("cloudformation", **kw)
ec2 = boto3.client("ec2", **kw)
ssm = boto3.client("ssm", **kw)
r53 = boto3.client("route53", **kw)
logs = boto3.client("logs", **kw)
acm = boto3.client("acm", **kw)

# What the real account would already have: the hosted zone, the public AMI parameter (moto
# refuses names under /aws, so the template under test points LatestAmiId at our own name)
# and, when used, the key pair. moto does not model AWS::CertificateManager::Certificate (its
# placeholder has no ARN for the listener), so the stack uses an ACM certificate that moto
# issued, through the template's ExistingCertificateArn parameter.
zone = r53.create_hosted_zone(Name=domain, CallerReference=str(uuid.uuid4()))
zone_id = zone["HostedZone"]["Id"].split("/")[-1]
image_id = ec2.describe_images()["Images"][0]["ImageId"]
ssm.put_parameter(Name=ami_parameter, Value=image_id, Type="String", Overwrite=True)
certificate = acm.request_certificate(DomainName=f"*.{domain}", ValidationMethod="DNS")["CertificateArn"]

# A project name per stack, so stacks in the same moto do not share secret or log group names.
project = f"ci{developers}-{uuid.uuid4().hex[:8]}"
name = f"csagent-{project}"
params = {
    "ProjectName": project,
    "HostedZoneId": zone_id,
    "DomainName": domain,
    "ExistingCertificateArn": certificate,
}
if options == "all":
    # Every optional branch on: key pair, SSH CIDR, e-mail, s3:// package, access logs.
    key = "csagent-ci-" + uuid.uuid4().hex[:8]
    ec2.create_key_pair(KeyName=key)
    params.update({
        "KeyPairName": key,
        "AdminSshCidr": "203.0.113.0/24",
        "AlarmEmail": "ops@example.com",
        "DebUrl": "s3://csagent-artifacts/csagent_0.1.0_amd64.deb",
        "AccessLogBucket": "csagent-alb-logs",
    })
else:
    params["DebUrl"] = "https://example.invalid/csagent_0.1.0_amd64.deb"

body = open(path).read()
cfn.create_stack(
    StackName=name,
    TemplateBody=body,
    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
    Capabilities=["CAPABILITY_IAM"],
)
deadline = time.time() + 300
while True:
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    status = stack["StackStatus"]
    if not status.endswith("_IN_PROGRESS") or time.time() > deadline:
        break
    time.sleep(1)
print(f"  moto stack {name}: {status}")
if status != "CREATE_COMPLETE":
    print(f"  reason: {stack.get('StackStatusReason', '(none)')}")
    for event in cfn.describe_stack_events(StackName=name)["StackEvents"]:
        if event["ResourceStatus"].endswith("FAILED"):
            print(f"  {event['LogicalResourceId']} {event['ResourceStatus']}: "
                  f"{event.get('ResourceStatusReason', '')}")
    sys.exit(1)

# The stack has what the agent relies on.
problems = []
outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
for n in range(1, developers + 1):
    want = f"https://dev{n}.{domain}"
    if outputs.get(f"Dev{n}Url") != want:
        problems.append(f"output Dev{n}Url is {outputs.get(f'Dev{n}Url')!r}, want {want!r}")
for key in ("LoadBalancerDnsName", "InstanceId", "DataVolumeId"):
    if not outputs.get(key):
        problems.append(f"output {key} missing")
resources = []
token = None
while True:
    page = cfn.list_stack_resources(StackName=name, **({"NextToken": token} if token else {}))
    resources += page["StackResourceSummaries"]
    token = page.get("NextToken")
    if not token:
        break
if path.endswith(".yaml"):
    import yaml
    template = yaml.safe_load(body)
else:
    template = json.loads(body)
# Conditional resources: with "all" every optional one is on, except the certificate, which
# is replaced by the existing one in every moto run (see above).
expected = {k for k, v in template["Resources"].items()
            if "Condition" not in v or (options == "all" and v["Condition"] != "CreateCertificate")}
# moto lists only the resource types it models; the others (alarms, secrets, backup, ...) were
# accepted as placeholders. Report them by type; they are not a failure.
missing = expected - {r["LogicalResourceId"] for r in resources}
by_type = {}
for logical_id in missing:
    kind = template["Resources"][logical_id]["Type"]
    by_type[kind] = by_type.get(kind, 0) + 1
if by_type:
    print("  not modelled by moto (placeholders): "
          + ", ".join(f"{k} x{v}" for k, v in sorted(by_type.items())))
groups = set()
for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=f"/aws/ec2/{project}/"):
    groups |= {g["logGroupName"] for g in page["logGroups"]}
want_groups = {f"/aws/ec2/{project}/containers/dev{n}" for n in range(1, developers + 1)}
want_groups.add(f"/aws/ec2/{project}/agent")
if not want_groups <= groups:
    problems.append(f"log groups missing: {sorted(want_groups - groups)}")
instance = ec2.describe_instances(InstanceIds=[outputs["InstanceId"]])["Reservations"][0]["Instances"][0]
volume = ec2.describe_volumes(VolumeIds=[outputs["DataVolumeId"]])["Volumes"][0]
attached = [a for a in volume.get("Attachments", []) if a.get("InstanceId") == instance["InstanceId"]]
if not attached or attached[0].get("Device") != "/dev/sdf":
    problems.append(f"data volume not attached as /dev/sdf: {volume.get('Attachments')}")
for p in problems:
    print(f"  PROBLEM: {p}")
print(f"  moto: {len(resources)} resources, {len(outputs)} outputs, "
      f"{len(want_groups & groups)} log groups")
sys.exit(1 if problems else 0)
PY
}

check_case() { # developers format options
  local developers=$1 format=$2 options=$3
  local label="dev=$developers $format"
  local file="$WORK/env-$developers.$format"
  # Options that add resources at generation time (not Parameters).
  local extra=()
  if [ "$options" = all ]; then
    extra=(--password-rotation-lambda-arn "arn:aws:lambda:ap-southeast-7:123456789012:function:csagent-ci-rotate")
  fi
  echo
  echo "=== $label (optional parameters: $options) ==="
  if ! infra --developers "$developers" --domain "$DOMAIN" --hosted-zone-id "$ZONE_PLACEHOLDER" \
    --format "$format" "${extra[@]}" >"$file"; then
    record "$label" "FAIL: generation"
    FAILED=1
    return
  fi
  echo "  template: $(wc -c <"$file") bytes"

  local lint_rc=0
  cfn-lint -- "$file" >"$WORK/lint.txt" 2>&1 || lint_rc=$?
  local lint_findings
  lint_findings=$(grep -cE '^[EWI][0-9]{4} ' "$WORK/lint.txt" || true)
  if [ "$lint_rc" -ne 0 ]; then
    sed 's/^/  /' "$WORK/lint.txt"
    record "$label" "FAIL: cfn-lint exit $lint_rc, $lint_findings finding(s)"
    FAILED=1
  else
    echo "  cfn-lint: 0 errors, 0 warnings"
  fi

  local skips_ok=1
  check_skip_reasons "$file" || skips_ok=0
  local checkov_ok=1
  run_checkov "$file" "$WORK/checkov.json" || checkov_ok=0
  if [ "$skips_ok" -ne 1 ] || [ "$checkov_ok" -ne 1 ]; then
    record "$label" "FAIL: checkov"
    FAILED=1
  fi

  # The same template except LatestAmiId's default, which names an SSM parameter moto has.
  local moto_result
  local moto_file="$WORK/env-$developers-moto.$format"
  infra --developers "$developers" --domain "$DOMAIN" --hosted-zone-id "$ZONE_PLACEHOLDER" \
    --format "$format" --ami-ssm-parameter "$MOTO_AMI_PARAMETER" "${extra[@]}" >"$moto_file"
  if run_moto "$moto_file" "$developers" "$options"; then
    moto_result="CREATE_COMPLETE"
  else
    moto_result="FAIL"
    record "$label" "FAIL: moto create-stack"
    FAILED=1
  fi
  if [ "$lint_rc" -eq 0 ] && [ "$skips_ok" -eq 1 ] && [ "$checkov_ok" -eq 1 ] && [ "$moto_result" != FAIL ]; then
    record "$label" "ok: cfn-lint 0/0, checkov 0 failed, moto $moto_result"
  fi
}

check_case 1 json none
check_case 8 json all
check_case 8 yaml all
check_case 40 json none

echo
echo "=== check-infra summary ==="
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
  echo "check-infra: FAILED"
  exit 1
fi
echo "check-infra: all passed"
