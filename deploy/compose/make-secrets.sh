#!/usr/bin/env bash
# Generate the compose secrets (random hex passwords) that docker-compose.yml reads from
# deploy/compose/secrets/. Existing files are kept, so running it again changes nothing.
#
# The files are mode 0644 because each container reads them as its own user (postgres 999,
# grafana 472, tierwatch 10001) and Compose bind-mounts them unchanged; the directory is made
# 0700 so that other users of this machine cannot read them.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
mkdir -p "$dir"
chmod 0700 "$dir"
for name in postgres_password grafana_admin_password; do
  file="$dir/$name"
  if [[ -s "$file" ]]; then
    echo "kept      $file"
    continue
  fi
  # 24 random bytes as 48 hex digits: no character needs escaping in a URL.
  od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$file"
  chmod 0644 "$file"
  echo "generated $file"
done
