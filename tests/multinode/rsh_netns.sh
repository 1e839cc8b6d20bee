#!/usr/bin/env bash
# A launch agent for Open MPI that reaches simulated hosts (network namespaces, see
# netns_hosts.sh) instead of remote machines: mpirun runs `AGENT HOST COMMAND...` where it would
# run `ssh HOST COMMAND...`, and this runs COMMAND in HOST's namespace with `ip netns exec`.
#
#   mpirun --mca plm rsh --mca plm_rsh_agent tests/multinode/rsh_netns.sh ...
#
# HOST is looked up in NURI_NETNS_MAP, a comma list of HOST=NAMESPACE (an address or a name per
# entry; netns_hosts.sh map TAG N prints it). mpirun passes its environment to the agent, so the
# variable only has to be set where mpirun starts.
#
# Like ssh, the words of COMMAND are joined with spaces and run by a shell (Open MPI quotes for
# that), and the process gets a fresh hostname of its own (nuri-hI, a UTS namespace) when
# NURI_NETNS_HOSTNAMES=1, so MPI_Get_processor_name tells the hosts apart as on a real cluster.
set -euo pipefail

# ssh-style options before the host (Open MPI adds none for an agent that is not ssh/rsh, but be
# tolerant): skip them.
while (($#)) && [[ $1 == -* ]]; do
  case $1 in
    -l | -p | -o | -i | -F | -E | -J) shift 2 ;;
    *) shift ;;
  esac
done
(($# >= 2)) || { echo "rsh_netns.sh: usage: rsh_netns.sh HOST COMMAND..." >&2; exit 255; }
host=$1
shift

ns=""
IFS=',' read -r -a entries <<<"${NURI_NETNS_MAP:-}"
for e in "${entries[@]}"; do
  if [[ ${e%%=*} == "$host" ]]; then ns=${e#*=}; break; fi
done
if [[ -z $ns ]]; then
  echo "rsh_netns.sh: host '$host' is not in NURI_NETNS_MAP='${NURI_NETNS_MAP:-}'" >&2
  exit 255  # what ssh returns when it cannot connect
fi
ip netns list | awk '{print $1}' | grep -qx "$ns" || { echo "rsh_netns.sh: no network namespace '$ns' (host '$host')" >&2; exit 255; }

if [[ ${NURI_NETNS_HOSTNAMES:-0} == 1 && $ns =~ ^nuri_(h[0-9]+)_ ]]; then
  exec ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$1"' "nuri-${BASH_REMATCH[1]}" "$*"
fi
exec ip netns exec "$ns" /bin/sh -c "$*"
