#!/usr/bin/env bash
# W2 with OpenSSH multiplexing: per host one ControlMaster, 20 `ssh host echo i` sessions over
# it, then `ssh -O exit`; hosts at once. $4 = a directory for the control sockets.
source "$(dirname "$0")/../openssh/env.sh"
export MUX="$4"
head -n "$N" "$HOSTS_TSV" | xargs -P "$N" -L 1 bash -c '
  o="$(sshopts "$5" "$6") -o ControlPath=$MUX/$3"
  ssh $o -o ControlMaster=yes -o ControlPersist=yes -p "$3" "$4@$2" true || exit 1
  outs=""
  for i in $(seq 0 19); do
    out=$(ssh $o -o ControlMaster=no -p "$3" "$4@$2" echo $i) || exit 1
    outs="$outs${outs:+ }$out"
  done
  ssh $o -O exit -p "$3" "$4@$2" 2>/dev/null
  printf "%s\t%s\n" "$1" "$outs"' _
