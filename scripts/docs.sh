#!/usr/bin/env bash
# Builds the API reference of the public headers (include/nuri) with Doxygen into
# OUT_DIR/html (default build/docs/api) and fails on any Doxygen warning: every public type and
# function must be documented, and the comments must be well-formed.
#   scripts/docs.sh [OUT_DIR]        (needs doxygen: apt-get install -y doxygen)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/docs/api}
command -v doxygen > /dev/null || { echo "docs.sh: doxygen is not installed (apt-get install -y doxygen)"; exit 1; }
mkdir -p "$out"
log=$out/warnings.log
( cat docs/api/Doxyfile; echo "OUTPUT_DIRECTORY = $out"; echo "WARN_LOGFILE = $log" ) | doxygen - > /dev/null
if [[ -s $log ]]; then
  echo "docs.sh: Doxygen warned $(grep -c warning "$log") time(s):"
  head -40 "$log"
  exit 1
fi
echo "docs.sh: API reference in $out/html/index.html ($(ls "$out/html" | wc -l) files), no warnings"
