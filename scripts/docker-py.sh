#!/usr/bin/env bash
# Runs docker-py's own integration suite (tests/integration of its source, tag 7.2.0)
# against a Pier daemon of its own, offline:
#
#   bash scripts/docker-py.sh /path/to/docker-py-7.2.0 [pytest arguments...]
#
# The source is not in this repository (PyPI's package has no tests): check out tag 7.2.0 of
# github.com/docker/docker-py anywhere and give its folder. The daemon runs in a network
# namespace and a state directory of its own, both removed at the end. Docker Hub's
# `busybox`, `alpine:3.10`, `alpine:latest` and `hello-world` are stood in for by busybox
# images served from the daemon's own registry as its `--registry-mirror`, so the suite's
# pulls work without the internet. Tests that need swarm, plugins or a registry on the
# internet are deselected: scripts/docker-py-exclusions.txt lists each with its reason.
# The pytest summary is written to stdout and, with -o junit, to $PIER_DOCKERPY_JUNIT.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"

src=${1:?usage: bash scripts/docker-py.sh DOCKER_PY_SOURCE [pytest args...]}
shift
src=$(cd "$src" && pwd)
[ -d "$src/tests/integration" ] || {
    echo "$src has no tests/integration: give a checkout of docker-py's tag 7.2.0" >&2
    exit 1
}
ensure_packages "${RUNTIME_PACKAGES[@]}" python3-venv

pier=${PIER:-$PWD/target/debug/pier}
if [ ! -x "$pier" ]; then
    ensure_rust
    cargo build -q -p pier
fi

venv=${PIER_DOCKERPY_VENV:-/var/cache/pier/docker-py-venv}
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c 'import docker, sys; sys.exit(docker.__version__ != "7.2.0")'; then
    echo "== Making $venv (docker 7.2.0 and pytest from PyPI)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q docker==7.2.0 pytest==7.4.2 pytest-timeout==2.1.0 paramiko
fi

state=$(mktemp -d /tmp/pier-dockerpy-XXXXXX)
netns=pdp-$(basename "$state" | cut -d- -f3)
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ]; then
        # Leave no container behind: they would hold the network namespace's links.
        PIER_HOST=$state/pier.sock "$pier" rm -f $(PIER_HOST=$state/pier.sock "$pier" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
        kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    ip netns del "$netns" 2>/dev/null || true
    umount -R "$state/root" 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT
ip netns add "$netns"
ip -n "$netns" link set lo up
in_ns() { nsenter --net="/run/netns/$netns" "$@"; }

registry=127.0.0.1:5055
: >"$state/daemon.toml"
in_ns "$pier" daemon --root "$state/root" --socket "$state/pier.sock" \
    --docker-socket "$state/docker.sock" --config "$state/daemon.toml" \
    --registry-addr "$registry" --registry-mirror "$registry" --insecure-registry "$registry" \
    >"$state/daemon.log" 2>&1 &
daemon_pid=$!
export PIER_HOST=$state/pier.sock
for _ in $(seq 200); do
    [ -S "$state/docker.sock" ] && "$pier" info >/dev/null 2>&1 && break
    sleep 0.1
done
"$pier" info >/dev/null || { cat "$state/daemon.log"; exit 1; }

echo "== Serving busybox, alpine and hello-world from $registry (Docker Hub's stand-ins)"
rootfs=$state/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$rootfs/etc/group"
printf '#!/bin/sh\necho "Hello from Docker!"\n' >"$rootfs/hello"
chmod 755 "$rootfs/hello"
mkdir -p "$state/ctx"
tar -C "$rootfs" -cf "$state/ctx/rootfs.tar" .
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["sh"]\n' >"$state/ctx/Dockerfile"
"$pier" build -q -t "$registry/library/busybox:latest" "$state/ctx" >/dev/null
printf 'FROM %s\nCMD ["/hello"]\n' "$registry/library/busybox:latest" >"$state/ctx/Dockerfile"
"$pier" build -q -t "$registry/library/hello-world:latest" "$state/ctx" >/dev/null
for name in alpine:3.10 alpine:latest; do
    "$pier" tag "$registry/library/busybox:latest" "$registry/library/$name"
done
for name in busybox:latest alpine:3.10 alpine:latest hello-world:latest; do
    "$pier" push "$registry/library/$name" >/dev/null
    "$pier" rmi "$registry/library/$name" >/dev/null
done

deselect=()
while read -r test _; do
    [ -n "$test" ] && deselect+=(--deselect "tests/integration/$test")
done < <(grep -v '^#' scripts/docker-py-exclusions.txt)

echo "== docker-py $("$venv/bin/python" -c 'import docker; print(docker.__version__)') integration tests against Pier"
cd "$src"
junit=()
[ -n "${PIER_DOCKERPY_JUNIT:-}" ] && junit=(--junitxml "$PIER_DOCKERPY_JUNIT")
set +e
DOCKER_HOST=unix://$state/docker.sock DOCKER_TEST_API_VERSION=1.41 \
    in_ns "$venv/bin/pytest" -p no:cacheprovider --timeout 120 -q "${junit[@]}" \
    "${deselect[@]}" tests/integration "$@"
rc=$?
set -e
[ "$rc" = 0 ] || echo "daemon log: kept at /tmp/pier-dockerpy-daemon.log"
cp "$state/daemon.log" /tmp/pier-dockerpy-daemon.log
exit "$rc"
