#!/bin/sh
# Runs once per machine (the step is guarded by 'creates'). $1 is the root to work under.
set -eu
cd "$1"
mkdir -p srv/www
uname -a > srv/www/uname.txt
date -u +%Y-%m-%dT%H:%M:%SZ > srv/www/.setup-done
