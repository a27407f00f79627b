# Sourced by the OpenSSH workloads: $1 = hosts.tsv (name host port user key known_hosts scratch), $2 = N.
# Strict host key checking against our known_hosts, no user config, our key only.
HOSTS_TSV="$1"; N="$2"
[ "$(head -n "$N" "$HOSTS_TSV" | wc -l)" = "$N" ] || { echo "$HOSTS_TSV has fewer than $N hosts" >&2; exit 1; }
sshopts() { # key known_hosts
  echo "-F /dev/null -i $1 -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=$2 -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
}
export -f sshopts
