#!/usr/bin/env bash
# System packages some tests use, from Debian: the PostgreSQL server (shared sweep storage test),
# chromium (the report page rendered headless).
# Installed only when missing and when this user can; otherwise those tests skip and say why.
set -uo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-services: ${missing[*]} missing and not installable here (needs root + apt-get); their tests will skip" >&2
  exit 0
fi
echo "test-services: installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "test-services: could not install ${missing[*]}; their tests will skip" >&2
exit 0
