#!/usr/bin/env bash
# Simulated hosts on one machine: N network namespaces nuri_h1_TAG .. nuri_hN_TAG, each with an
# interface eth0 at 192.0.2.i/24 (the TEST-NET-1 documentation range, never routed) and loopback
# up, all plugged into a bridge that lives in its own namespace nuri_sw_TAG (the "switch"). Nothing
# is created in the machine's own network namespace, so runs with different TAGs never clash and
# the machine's network is untouched. Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and iproute2.
#
#   netns_hosts.sh check              exit 0 if namespaces can be made here, else print why, exit 1
#   netns_hosts.sh up TAG N           make the N hosts; prints one "ADDRESS NAMESPACE" line per host
#   netns_hosts.sh down TAG           remove every namespace of TAG (safe to repeat)
#   netns_hosts.sh map TAG N          prints the NURI_NETNS_MAP value for rsh_netns.sh
#   netns_hosts.sh list               the nuri_* namespaces present (to find leftovers)
#
# Or source it and call netns_check / netns_up / netns_down / netns_map.
# Run a command on host i:   ip netns exec nuri_hi_TAG COMMAND
set -euo pipefail

# shellcheck disable=SC2034  # used by the scripts that source this file
NETNS_SUBNET=192.0.2.0/24
netns_addr() { echo "192.0.2.$1"; }
netns_name() { echo "nuri_h$2_$1"; }    # netns_name TAG I
netns_switch() { echo "nuri_sw_$1"; }   # netns_switch TAG

netns_check() {
  if ((EUID != 0)); then echo "network namespaces need root (running as uid $EUID)"; return 1; fi
  if ! command -v ip >/dev/null 2>&1; then echo "no 'ip' command (install iproute2)"; return 1; fi
  local probe="nuri_probe_$$_$RANDOM" err
  if ! err=$(ip netns add "$probe" 2>&1); then echo "cannot create a network namespace: $err"; return 1; fi
  if ! err=$(ip -n "$probe" link add nuri_br type bridge 2>&1 && ip -n "$probe" link add name nuri_a type veth peer name nuri_b 2>&1); then
    ip netns del "$probe" 2>/dev/null || true
    echo "cannot create a bridge or veth pair in a namespace: $err"
    return 1
  fi
  ip netns del "$probe"
}

netns_valid_tag() {
  [[ $1 =~ ^[A-Za-z0-9]{1,20}$ ]] || { echo "netns_hosts: bad TAG '$1' (letters and digits, at most 20)" >&2; return 1; }
}

netns_up() {
  local tag=$1 n=$2 i sw ns
  netns_valid_tag "$tag"
  if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 250)); then echo "netns_hosts: N must be 1..250, not '$n'" >&2; return 1; fi
  sw=$(netns_switch "$tag")
  ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  for ((i = 1; i <= n; i++)); do
    ns=$(netns_name "$tag" "$i")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # One veth pair per host, made directly inside the two namespaces: eth0 on the host, hI on
    # the switch's bridge.
    ip link add eth0 netns "$ns" type veth peer name "h$i" netns "$sw"
    ip -n "$sw" link set "h$i" master br0
    ip -n "$sw" link set "h$i" up
    ip -n "$ns" addr add "$(netns_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    echo "$(netns_addr "$i") $ns"
  done
}

netns_down() {
  local tag=$1 ns
  netns_valid_tag "$tag"
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    if [[ $ns =~ ^nuri_(h[0-9]+|sw)_${tag}$ ]]; then
      # Processes still inside keep a namespace's network alive after it is unnamed: end them.
      local pids
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      # shellcheck disable=SC2086  # one pid per word
      if [[ -n $pids ]]; then kill -9 $pids 2>/dev/null || true; fi
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

netns_map() {
  local tag=$1 n=$2 i out=""
  for ((i = 1; i <= n; i++)); do out+="${out:+,}$(netns_addr "$i")=$(netns_name "$tag" "$i")"; done
  echo "$out"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  cmd=${1:-}
  case $cmd in
    check) netns_check ;;
    up) (($# == 3)) || { echo "usage: $0 up TAG N" >&2; exit 2; }; netns_up "$2" "$3" ;;
    down) (($# == 2)) || { echo "usage: $0 down TAG" >&2; exit 2; }; netns_down "$2" ;;
    map) (($# == 3)) || { echo "usage: $0 map TAG N" >&2; exit 2; }; netns_map "$2" "$3" ;;
    list) ip netns list | grep -E '^nuri_' || true ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
fi
