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
# Java 8 bytecode runs in every Fiji; an ij.jar built for a newer Java needs the JDK's own level
if ! javac --release 8 -nowarn -encoding UTF-8 -cp "$ij_jar" -d "$here/build/classes" "$here"/src/semiblind/*.java 2>"$here/build/javac.log"; then
  if grep -q "wrong version" "$here/build/javac.log"; then
    javac -nowarn -encoding UTF-8 -cp "$ij_jar" -d "$here/build/classes" "$here"/src/semiblind/*.java
  else
    cat "$here/build/javac.log" >&2; exit 1
  fi
fi
(cd "$here/build/classes" && jar cf "$here/build/semiblind-ij1.jar" semiblind)
echo "$here/build/semiblind-ij1.jar"
