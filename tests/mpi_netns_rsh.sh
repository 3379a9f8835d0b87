#!/usr/bin/env bash
# Open MPI's remote launcher for tests/mpi_two_hosts.sh: called as `mpi_netns_rsh.sh HOST CMD...`
# (in place of `ssh HOST CMD...`), it runs CMD in the network namespace of HOST's address
# ($CLIP_NETNS_MAP: "ADDRESS=NAMESPACE ...").
set -euo pipefail
host="$1"; shift
echo "$host" >> "${CLIP_NETNS_LOG:-/dev/null}"
for pair in $CLIP_NETNS_MAP; do
  # Like ssh: the command words are joined and run by a shell (Open MPI quotes for that).
  if [ "${pair%%=*}" = "$host" ]; then exec ip netns exec "${pair#*=}" /bin/sh -c "$*"; fi
done
echo "mpi_netns_rsh: no namespace for host $host" >&2
exit 1
