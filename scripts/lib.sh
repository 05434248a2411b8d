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

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "run this as root (sudo $0): Pier manages namespaces, mounts and cgroups" >&2
        exit 1
    fi
}

# What Pier itself needs at run time.
RUNTIME_PACKAGES=(busybox-static libc-bin ca-certificates nftables iproute2 e2fsprogs util-linux)
