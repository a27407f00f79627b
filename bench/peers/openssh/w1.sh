#!/usr/bin/env bash
# W1: one `ssh host uname -a` per host, all at once (xargs -P N), no multiplexing.
source "$(dirname "$0")/env.sh"
head -n "$N" "$HOSTS_TSV" | xargs -P "$N" -L 1 bash -c '
  out=$(ssh $(sshopts "$5" "$6") -o ControlMaster=no -o ControlPath=none -p "$3" "$4@$2" uname -a) || exit 1
  printf "%s\t%s\n" "$1" "$out"' _
