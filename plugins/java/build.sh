#!/usr/bin/env bash
# Compile the ImageJ 1 shim of Semi-Blind Deconvolution (no Maven). The one recipe is Python's
# fiji_bridge.imagej.build_shim (also run on first use): into plugins/java/build/ in a source checkout, into
# the user's cache (~/.cache/semiblind/VERSION/) for an installed package.
# Usage: plugins/java/build.sh [path/to/ij.jar]   (default: $SEMIBLIND_IJ_JAR or /usr/share/java/ij.jar)
# $PYTHON: the interpreter with semiblind installed (default: the checkout's .venv/bin/python, else python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ij_jar="${1:-${SEMIBLIND_IJ_JAR:-/usr/share/java/ij.jar}}"
[ -f "$ij_jar" ] || { echo "build.sh: ImageJ jar not found: $ij_jar (apt-get install libij-java)" >&2; exit 1; }
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/../../.venv/bin/python" ]; then py="$here/../../.venv/bin/python"; else py=python3; fi
fi
"$py" -c "import fiji_bridge" 2>/dev/null || {
  echo "build.sh: $py cannot import fiji_bridge; set PYTHON to the interpreter that has semiblind installed" >&2; exit 1; }
exec "$py" -c "import sys; from fiji_bridge.imagej._jvm import main; sys.exit(main(sys.argv[1:]))" "$ij_jar"
