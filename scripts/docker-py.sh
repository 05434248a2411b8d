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
ensure_packages "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}" pass gnupg

pier=${PIER:-$PWD/target/debug/pier}
if [ ! -x "$pier" ]; then
    ensure_rust
    cargo build -q -p pier
fi

ensure_docker_py
venv=$DOCKER_PY_VENV

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
    gpgconf --kill all 2>/dev/null || true
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
# nsenter execs the daemon: $! is the daemon itself, which the cleanup stops.
nsenter --net="/run/netns/$netns" "$pier" daemon --root "$state/root" --socket "$state/pier.sock" \
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
# Alpine's own users, groups and directories, which the suite relies on (`exec -u postgres`,
# `workdir=/var/opt`).
mkdir -p "$rootfs"/{bin,etc,tmp,root,home,mnt,opt,srv,run,media,var/{opt,tmp,log,lib,cache,spool,empty},usr/{bin,sbin,local/bin}}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/ash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
adm:x:3:4:adm:/var/adm:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown
halt:x:7:0:halt:/sbin:/sbin/halt
mail:x:8:12:mail:/var/spool/mail:/sbin/nologin
news:x:9:13:news:/usr/lib/news:/sbin/nologin
operator:x:11:0:operator:/root:/sbin/nologin
ftp:x:21:21::/var/lib/ftp:/sbin/nologin
sshd:x:22:22:sshd:/dev/null:/sbin/nologin
at:x:25:25:at:/var/spool/cron/atjobs:/sbin/nologin
squid:x:31:31:Squid:/var/cache/squid:/sbin/nologin
xfs:x:33:33:X Font Server:/etc/X11/fs:/sbin/nologin
games:x:35:35:games:/usr/games:/sbin/nologin
postgres:x:70:70::/var/lib/postgresql:/bin/sh
cyrus:x:85:12::/usr/cyrus:/sbin/nologin
vpopmail:x:89:89::/var/vpopmail:/sbin/nologin
ntp:x:123:123:NTP:/var/empty:/sbin/nologin
smmsp:x:209:209:smmsp:/var/spool/mqueue:/sbin/nologin
guest:x:405:100:guest:/dev/null:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
sys:x:3:root,bin,adm
adm:x:4:root,adm,daemon
tty:x:5:
disk:x:6:root,adm
lp:x:7:lp
mem:x:8:
kmem:x:9:
wheel:x:10:root
floppy:x:11:root
mail:x:12:mail
news:x:13:news
uucp:x:14:uucp
man:x:15:man
cron:x:16:cron
console:x:17:
audio:x:18:
cdrom:x:19:
dialout:x:20:root
ftp:x:21:
sshd:x:22:
input:x:23:
at:x:25:at
tape:x:26:root
video:x:27:root
netdev:x:28:
readproc:x:30:
squid:x:31:squid
xfs:x:33:xfs
kvm:x:34:kvm
games:x:35:
shadow:x:42:
postgres:x:70:
cdrw:x:80:
usb:x:85:
vpopmail:x:89:
users:x:100:games
ntp:x:123:
nofiles:x:200:
smmsp:x:209:smmsp
locate:x:245:
abuild:x:300:
utmp:x:406:
ping:x:999:
nogroup:x:65533:
nobody:x:65534:
GROUP
mkdir -p "$state/ctx"
tar -C "$rootfs" -cf "$state/ctx/rootfs.tar" .
printf 'FROM scratch\nADD rootfs.tar /\nCMD ["sh"]\n' >"$state/ctx/Dockerfile"
"$pier" build -q -t "$registry/library/busybox:latest" "$state/ctx" >/dev/null
# hello-world has a layer of its own, as Docker Hub's has: pruning it frees space.
printf '#!/bin/sh\necho "Hello from Docker!"\n' >"$state/ctx/hello"
chmod 755 "$state/ctx/hello"
printf 'FROM %s\nCOPY hello /hello\nCMD ["/hello"]\n' "$registry/library/busybox:latest" >"$state/ctx/Dockerfile"
"$pier" build -q -t "$registry/library/hello-world:latest" "$state/ctx" >/dev/null
for name in alpine:3.10 alpine:latest; do
    "$pier" tag "$registry/library/busybox:latest" "$registry/library/$name"
done
for name in busybox:latest alpine:3.10 alpine:latest hello-world:latest; do
    "$pier" push "$registry/library/$name" >/dev/null
    "$pier" rmi "$registry/library/$name" >/dev/null
done

# The credentials tests store secrets through `pass`, with a GPG key and a password store of
# this run's own (as docker-py's CI image makes them), and docker-credential-pass from
# Debian's package, unpacked for this run only: installed, the docker CLI would take it as
# every user's credential store.
helpers=$state/credential-helpers
(cd "$state" && apt-get download -q golang-docker-credential-helpers >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get download -q golang-docker-credential-helpers >/dev/null; })
dpkg-deb -x "$state"/golang-docker-credential-helpers_*.deb "$helpers"
# Its -secretservice wants a desktop's D-Bus, and docker-py prefers it to -pass when found
# (docker-py's CI image has -pass alone).
rm -f "$helpers/usr/bin/docker-credential-secretservice"
export PATH=$helpers/usr/bin:$PATH
export GNUPGHOME=$state/gnupg PASSWORD_STORE_DIR=$state/password-store
mkdir -m 700 "$GNUPGHOME"
sh "$src/tests/integration/credentials/create_gpg_key.sh" >/dev/null 2>&1
pass init user@example.com >/dev/null

deselect=()
while read -r test _; do
    [ -n "$test" ] && deselect+=(--deselect "tests/integration/$test")
done < <(grep -v '^#' scripts/docker-py-exclusions.txt)

echo "== docker-py $("$venv/bin/python" -c 'import docker; print(docker.__version__)') integration tests against Pier"
cd "$src"
junit=()
[ -n "${PIER_DOCKERPY_JUNIT:-}" ] && junit=(--junitxml "$PIER_DOCKERPY_JUNIT")
set +e
# A client configuration of the run's own: the context tests write contexts beside its
# config.json (without one, into the current directory, the source folder).
mkdir -p "$state/docker-config"
echo '{}' >"$state/docker-config/config.json"
DOCKER_CONFIG=$state/docker-config DOCKER_HOST=unix://$state/docker.sock DOCKER_TEST_API_VERSION=1.41 \
    in_ns "$venv/bin/pytest" -p no:cacheprovider --timeout 120 -q "${junit[@]}" \
    "${deselect[@]}" tests/integration "$@"
rc=$?
set -e
[ "$rc" = 0 ] || echo "daemon log: kept at /tmp/pier-dockerpy-daemon.log"
cp "$state/daemon.log" /tmp/pier-dockerpy-daemon.log
exit "$rc"
