#!/usr/bin/env bash
# W2 without multiplexing: per host 20 `ssh host echo i` one after another (a connection each).
source "$(dirname "$0")/env.sh"
head -n "$N" "$HOSTS_TSV" | xargs -P "$N" -L 1 bash -c '
  outs=""
  for i in $(seq 0 19); do
    out=$(ssh $(sshopts "$5" "$6") -o ControlMaster=no -o ControlPath=none -p "$3" "$4@$2" echo $i) || exit 1
    outs="$outs${outs:+ }$out"
  done
  printf "%s\t%s\n" "$1" "$outs"' _
