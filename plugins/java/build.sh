#!/usr/bin/env bash
# Compile the ImageJ 1 shim of Semi-Blind Deconvolution into plugins/java/build/ (no Maven).
# Usage: plugins/java/build.sh [path/to/ij.jar]   (default: $SEMIBLIND_IJ_JAR or /usr/share/java/ij.jar)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ij_jar="${1:-${SEMIBLIND_IJ_JAR:-/usr/share/java/ij.jar}}"
[ -f "$ij_jar" ] || { echo "build.sh: ImageJ jar not found: $ij_jar (apt-get install libij-java)" >&2; exit 1; }
command -v javac >/dev/null || { echo "build.sh: javac not found (apt-get install default-jdk-headless)" >&2; exit 1; }
rm -rf "$here/build/classes"
mkdir -p "$here/build/classes"
javac --release 8 -nowarn -encoding UTF-8 -cp "$ij_jar" -d "$here/build/classes" "$here"/src/semiblind/*.java
(cd "$here/build/classes" && jar cf "$here/build/semiblind-ij1.jar" semiblind)
echo "$here/build/semiblind-ij1.jar"
