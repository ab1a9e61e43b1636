#!/usr/bin/env bash
# The cluster in one command: 3 app hosts (network namespaces) behind HAProxy, a multi-node
# SeaweedFS, Redis with a replica and 3 sentinels; then the checks and their report (about 3
# minutes; --quick: shorter throughput runs). As root. Options go to checks.py (--only NAME...).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "run.sh: run as root (it makes network namespaces, a bridge and veth pairs)" >&2
  exit 2
fi
missing=()
for tool in ip haproxy redis-server wrk; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: missing ${missing[*]}: apt-get install iproute2 haproxy redis-server wrk" >&2
  exit 2
fi
python=${PYTHON:-.venv/bin/python}
if ! "$python" -c 'import service, httpx, boto3' 2>/dev/null || [ ! -x "$(dirname "$python")/weed" ]; then
  echo "run.sh: $python needs the service and its test extras: pip install -e '.[test]'" >&2
  exit 2
fi

# NOTE: the driver stops what it started and removes its namespaces itself, also on an error
#   or SIGTERM; this is the backstop if it is killed outright: whatever still runs in the
#   cluster's namespaces is killed, then the namespaces and the bridge are removed.
workdir=$(mktemp -d /tmp/asgilook-cluster-XXXXXX)
cleanup() {
  status=$?
  for namespace in $(ip netns list | awk '$1 ~ /^alk-/ {print $1}'); do
    pids=$(ip netns pids "$namespace")
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    ip netns delete "$namespace" 2>/dev/null || true
  done
  ip link delete alk-br 2>/dev/null || true
  # The driver removes its directory, or keeps it for its logs after a failure; killed (status
  # over 128), it could not: the data goes too.
  [ "$status" -le 128 ] || rm -rf "$workdir"
}
trap cleanup EXIT

"$python" infra/cluster/checks.py --workdir "$workdir" "$@"
