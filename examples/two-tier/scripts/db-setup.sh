#!/bin/sh
# PostgreSQL for the web tier: listen on every address, let role $1 in from the machines'
# network with a password, create the role and its database. Runs once (the step's guard).
set -eu
role="$1"
conf=$(ls -d /etc/postgresql/*/main | head -n 1)
printf "listen_addresses = '*'\n" > "$conf/conf.d/provisioning-listen.conf"
grep -q "^host $role $role" "$conf/pg_hba.conf" ||
    echo "host $role $role 0.0.0.0/0 scram-sha-256" >> "$conf/pg_hba.conf"
systemctl restart postgresql
until su postgres -c "pg_isready -q"; do sleep 0.2; done
su postgres -c "psql -v ON_ERROR_STOP=1 -q" <<SQL
CREATE ROLE $role LOGIN PASSWORD '$role';
CREATE DATABASE $role OWNER $role;
SQL
touch /var/lib/postgresql/.provisioning-app
