#!/usr/bin/env bash
# Issue 18: `clip train` across two hosts, made on one machine as two network namespaces joined
# by a veth pair (10.77.0.1 and 10.77.0.2), with an Open MPI hostfile. mpirun runs in the first
# namespace; Open MPI's remote launcher (normally ssh) is `ip netns exec` into the namespace of
# the host's address (tests/mpi_netns_rsh.sh). TCP only, restricted to the veth network. The
# 2-process run must give the one-process run's losses (1e-4 relative).
#
#   tests/mpi_two_hosts.sh CLIP_BINARY SHARED_DATA SCRATCH
# Exit 77 (CTest: skipped) only when network namespaces cannot be made here, saying so.
set -euo pipefail
clip="$1"; shared="$2"; scratch="$3"
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(cd "$here/.." && pwd)"
A=clip_mpi_a_$$; B=clip_mpi_b_$$
if ! ip netns add "$A" 2>/tmp/netns.err.$$; then
  echo "SKIPPED: network namespaces are not permitted here (ip netns add: $(cat /tmp/netns.err.$$)); the two-host test needs root or CAP_SYS_ADMIN"
  rm -f /tmp/netns.err.$$
  exit 77
fi
rm -f /tmp/netns.err.$$
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$B"
ip link add "va$$" type veth peer name "vb$$"
ip link set "va$$" netns "$A"; ip link set "vb$$" netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev "va$$"; ip -n "$B" addr add 10.77.0.2/24 dev "vb$$"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "va$$" up; ip -n "$B" link set "vb$$" up

rm -rf "$scratch"; mkdir -p "$scratch"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=1\n' > "$scratch/hosts"
export CLIP_NETNS_MAP="10.77.0.1=$A 10.77.0.2=$B" CLIP_NETNS_LOG="$scratch/launched.log"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"  # an ASan build: Open MPI's allocations outlive it
args=(train --train-data "$shared/cifar10_jpeg/test" --templates "$repo/recipes/cifar10/cifar10_eval_templates.txt"
      --model-config cifar10-vit-tiny --vocab "$repo/models/cifar10-vit-tiny" --batch-size 16 --steps 6
      --lr 1e-3 --warmup 2 --seed 5 --threads 1 --workers 1 --log-every 1 --save-every 3)
"$clip" "${args[@]}" --output "$scratch/one" > "$scratch/one.log" 2>&1 || { cat "$scratch/one.log"; exit 1; }
ip netns exec "$A" timeout 300 mpirun --hostfile "$scratch/hosts" -np 2 \
  --mca plm_rsh_agent "$here/mpi_netns_rsh.sh" \
  --mca btl tcp,self --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 \
  -x OMP_NUM_THREADS -x OMP_WAIT_POLICY -x ASAN_OPTIONS \
  "$clip" "${args[@]}" --output "$scratch/two" > "$scratch/two.log" 2>&1 || { cat "$scratch/two.log"; exit 1; }
cat "$scratch/two.log"
grep -qx 10.77.0.2 "$scratch/launched.log" || { echo "the second host was not launched in its namespace"; exit 1; }
/usr/bin/python3 - "$scratch" <<'PY'
import json, sys
d = sys.argv[1]
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{d}/{run}/metrics.jsonl") if json.loads(l)["type"] == "train"]
a, b = losses("one"), losses("two")
cfg = json.load(open(f"{d}/two/config.json"))
assert cfg["derived"]["world_size"] == 2, cfg["derived"]
assert len(a) == len(b) == 6, (a, b)
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"two hosts (network namespaces) vs one process: largest per-step loss relative difference {worst:.3e}")
assert worst <= 1e-4, (a, b)
PY
echo "TWO HOSTS OK"
