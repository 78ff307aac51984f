#!/usr/bin/env bash
# Print the path of a promtool binary, obtaining one if needed; exit 1 if none can be had.
#
#   observability/alerts/get_promtool.sh [CACHE_DIR]      (default: data_cache/promtool)
#
# Order: $PROMTOOL, promtool on PATH, CACHE_DIR/usr/bin/promtool, then Debian's prometheus
# package downloaded with `apt-get download` and unpacked with `dpkg -x` into CACHE_DIR
# (the server is never installed or run; only promtool is used). Logs go to stderr.
set -euo pipefail

cache="${1:-data_cache/promtool}"
log() { echo "get_promtool: $*" >&2; }

if [[ -n "${PROMTOOL:-}" && -x "${PROMTOOL}" ]]; then echo "${PROMTOOL}"; exit 0; fi
if command -v promtool >/dev/null 2>&1; then command -v promtool; exit 0; fi
if [[ -x "${cache}/usr/bin/promtool" ]]; then echo "$(cd "${cache}" && pwd)/usr/bin/promtool"; exit 0; fi

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
  log "no promtool on PATH and no apt-get/dpkg to fetch Debian's prometheus package"; exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
download() { (cd "${work}" && apt-get download -qq -o APT::Sandbox::User=root prometheus >/dev/null 2>&1); }
if ! download; then
  if [[ "$(id -u)" == 0 ]]; then
    log "apt-get download failed; refreshing package lists"
    apt-get update -qq >/dev/null 2>&1 || true
    download || { log "cannot download the prometheus package"; exit 1; }
  else
    log "cannot download the prometheus package (package lists stale? run apt-get update as root)"; exit 1
  fi
fi

mkdir -p "${cache}"
dpkg -x "${work}"/prometheus_*.deb "${work}/root"
mkdir -p "${cache}/usr/bin"
cp "${work}/root/usr/bin/promtool" "${cache}/usr/bin/promtool"
chmod +x "${cache}/usr/bin/promtool"
log "extracted promtool into ${cache}"
echo "$(cd "${cache}" && pwd)/usr/bin/promtool"
