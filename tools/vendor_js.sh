#!/usr/bin/env bash
# Fetch the browser libraries the dashboards use from the npm registry (`npm pack`, no Node build step),
# copy the built browser files and their licenses into dashboards/static/vendor/, and record the exact
# versions and sha256 of the tarballs and of every vendored file in dashboards/static/vendor/VERSIONS.
# Usage: tools/vendor_js.sh            (versions pinned below; edit them to upgrade, then commit the result)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=dashboards/static/vendor
# package@version  file-in-package:vendored-name ...
PACKAGES=(
  "uplot@1.6.32 dist/uPlot.iife.min.js:uPlot.iife.min.js dist/uPlot.min.css:uPlot.min.css LICENSE:uPlot.LICENSE"
)
command -v npm >/dev/null || { echo "npm is needed (Debian: apt-get install npm)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
{
  echo "# Vendored browser libraries (tools/vendor_js.sh). package version tarball-sha256, then file sha256"
} > "$TMP/VERSIONS"
for entry in "${PACKAGES[@]}"; do
  read -r spec files <<<"$entry"
  (cd "$TMP" && npm pack --silent "$spec" >/dev/null)
  tgz=$(ls "$TMP"/*.tgz)
  mkdir -p "$TMP/x" && tar -xzf "$tgz" -C "$TMP/x"
  echo "$spec $(sha256sum "$tgz" | cut -d' ' -f1)" >> "$TMP/VERSIONS"
  for f in $files; do
    src=${f%%:*}; dst=${f##*:}
    cp "$TMP/x/package/$src" "$OUT/$dst"
    echo "  $dst $(sha256sum "$OUT/$dst" | cut -d' ' -f1)" >> "$TMP/VERSIONS"
  done
  rm -rf "$TMP/x" "$tgz"
done
cp "$TMP/VERSIONS" "$OUT/VERSIONS"
cat "$OUT/VERSIONS"
