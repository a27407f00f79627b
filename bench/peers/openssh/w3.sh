#!/usr/bin/env bash
# W3: scp (SFTP protocol in OpenSSH 9) of the payload, then `ssh host sha256sum`; hosts at once.
source "$(dirname "$0")/env.sh"
export PAYLOAD="$3"
head -n "$N" "$HOSTS_TSV" | xargs -P "$N" -L 1 bash -c '
  o="$(sshopts "$5" "$6") -o ControlMaster=no -o ControlPath=none"
  scp -q $o -P "$3" "$PAYLOAD" "$4@$2:$7/payload.bin" || exit 1
  out=$(ssh $o -p "$3" "$4@$2" sha256sum "$7/payload.bin") || exit 1
  printf "%s\t%s\n" "$1" "${out%% *}"' _
