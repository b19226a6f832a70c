#!/usr/bin/env bash
# Compiles the JMS test programs (tests/java/*.java) into BUILD_DIR, only
# when their sources (or the jars) changed since the last build there:
#
#   tests/java/build.sh BUILD_DIR [SRC_DIR]
#
# SRC_DIR (default tests/java) is where the *.java are: bench/compare.sh
# builds bench/java (the OpenWire load program) with the same jars.
#
# Prints the run-time class path (BUILD_DIR and the jars) on stdout. The
# jars are Debian's: the ActiveMQ 5.17 client (libactivemq-java, which the
# `activemq` package pulls in), the JMS 1.1 API (geronimo-jms_1.1_spec) and
# what the client needs at run time (hawtbuf, slf4j, the J2EE management
# API); $HALYARD_JAVA_LIB overrides /usr/share/java. scripts/test.sh
# installs them when missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: tests/java/build.sh BUILD_DIR [SRC_DIR]}
src=${2:-$here}
lib=${HALYARD_JAVA_LIB:-/usr/share/java}

jars=()
for jar in activemq-client geronimo-jms_1.1_spec hawtbuf slf4j-api slf4j-nop geronimo-j2ee-management-1.1-spec; do
    [ -e "$lib/$jar.jar" ] || {
        echo "tests/java/build.sh: $lib/$jar.jar is missing (Debian: apt-get install activemq)" >&2
        exit 1
    }
    jars+=("$lib/$jar.jar")
done
cp=$(IFS=:; echo "${jars[*]}")
command -v javac >/dev/null || {
    echo "tests/java/build.sh: javac not found (Debian: apt-get install openjdk-17-jdk-headless)" >&2
    exit 1
}

want=$( (cat "$src"/*.java; readlink -f "${jars[@]}") | sha256sum | cut -d' ' -f1)
stamp="$out/.sources.sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$out"
    mkdir -p "$out"
    javac -Xlint:all -Werror -encoding UTF-8 -d "$out" -cp "$cp" "$src"/*.java >&2
    echo "$want" >"$stamp"
fi
echo "$out:$cp"
