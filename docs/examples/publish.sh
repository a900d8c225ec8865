#!/bin/sh
# Publish a trigger atomically from any shell: write under a hidden name in the same
# directory, make it read-only for others, then rename it to its final name.
#   usage: publish.sh SPOOL_DIR NAME 'command to run'
set -eu
spool=$1 name=$2 cmd=$3
tmp="$spool/.$name.$$.part"
printf '%s\n' "$cmd" > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$spool/$name.trigger"
echo "$spool/$name.trigger"
