#!/usr/bin/env bash
# Debian's headless Chromium and its WebDriver server, for the dashboard's browser
# tests (tests/e2e/dashboard.rs). Installed only when missing, as
# hack/cluster/build.sh installs its apt packages; apt's own cache keeps the .debs.
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-dejavu-core)

log() { echo "[browser] $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then log "chromium and chromium-driver present"; exit 0; fi
log "installing apt packages: ${missing[*]}"
if ! apt-get install -y --no-install-recommends --dry-run "${missing[@]}" >/dev/null 2>&1; then
  log "apt-get update"; apt-get update
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
command -v chromedriver >/dev/null || { log "chromedriver not on PATH after install"; exit 1; }
