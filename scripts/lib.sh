# Shared by scripts/up.sh and scripts/test.sh.

# Installs the Debian packages named, if any is missing (idempotent; the machine may be new).
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== Installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        echo "cargo is missing: install a Rust toolchain (1.85 or newer, e.g. with rustup) and run this again" >&2
        exit 1
    fi
}

# Makes the script run as root: as it is when root already (a fresh Debian machine often
# has no sudo), else again through sudo, keeping the Rust toolchain on PATH.
# Call it as `need_root "$@"`.
need_root() {
    [ "$(id -u)" = 0 ] && return 0
    if command -v sudo >/dev/null; then
        local keep=("PATH=$PATH")
        [ -d "${CARGO_HOME:-$HOME/.cargo}" ] && keep+=("CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}")
        [ -d "${RUSTUP_HOME:-$HOME/.rustup}" ] && keep+=("RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}")
        for v in PIER_ROOT PIER_HOST PIER_LOGFILE; do
            [ -n "${!v:-}" ] && keep+=("$v=${!v}")
        done
        echo "== Not root: running $0 again through sudo" >&2
        exec sudo env "${keep[@]}" bash "$PWD/scripts/$(basename "$0")" "$@"
    fi
    echo "run this as root (Pier manages namespaces, mounts and cgroups): sudo is not installed, so log in as root (su -) and run: bash $0" >&2
    exit 1
}

# What Pier itself needs at run time.
RUNTIME_PACKAGES=(busybox-static libc-bin ca-certificates nftables iproute2 e2fsprogs util-linux)
# What building Pier needs besides Rust: a C compiler, and protoc with the protobuf
# well-known types (google/protobuf/*.proto, in libprotobuf-dev, only recommended by
# protobuf-compiler) for the etcd client's gRPC code (pier-store's etcd backend).
BUILD_PACKAGES=(gcc protobuf-compiler libprotobuf-dev)

# docker-py (Docker's Python SDK, `docker` on PyPI) in a venv of its own, for the tests
# that drive Pier's Docker API with it and for scripts/docker-py.sh. Idempotent.
DOCKER_PY_VENV=${PIER_DOCKERPY_VENV:-/var/cache/pier/docker-py-venv}
ensure_docker_py() {
    ensure_packages python3-venv
    if [ -x "$DOCKER_PY_VENV/bin/pytest" ] &&
        "$DOCKER_PY_VENV/bin/python" -c 'import docker, websocket, sys; sys.exit(docker.__version__ != "7.2.0")' 2>/dev/null; then
        return 0
    fi
    echo "== Making $DOCKER_PY_VENV (docker 7.2.0 and pytest from PyPI)"
    python3 -m venv "$DOCKER_PY_VENV"
    "$DOCKER_PY_VENV/bin/pip" install -q "docker[websockets]==7.2.0" pytest==7.4.2 pytest-timeout==2.1.0 paramiko
}

# promtool (Prometheus's checker) unpacked from Debian's `prometheus` package, for the
# test that checks /metrics: installing the package would also start a Prometheus server.
PROMTOOL=${PIER_PROMTOOL:-/var/cache/pier/promtool/usr/bin/promtool}
ensure_promtool() {
    if [ -x "$PROMTOOL" ]; then
        return 0
    fi
    echo "== Unpacking promtool from Debian's prometheus package"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1) ||
        { apt-get update -q >/dev/null && (cd "$tmp" && apt-get download -q prometheus >/dev/null); }
    mkdir -p /var/cache/pier/promtool
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    install -D -m 0755 "$tmp/x/usr/bin/promtool" "$PROMTOOL"
    rm -rf "$tmp"
}
