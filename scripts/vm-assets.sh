#!/usr/bin/env bash
# Installs what Pier's VMs need into ${PIER_VM_DIR:-/usr/local/lib/pier/vm}:
#   vmlinuz           Debian's cloud kernel (a bzImage; QEMU's microvm boots it directly)
#   VERSION           its version (e.g. 6.1.0-57-cloud-amd64)
#   modules/*.ko      the 14 modules the VM's init loads (virtio, virtio-fs, net, console...)
#   modules/modules.order   their load order, one file name per line
#   pier-guest        the VM's init (a static binary, the initramfs's /init)
# and QEMU (qemu-system-x86) from Debian. Idempotent and quick when all is in place:
# the kernel is fetched only when missing (remove the directory to take a newer one),
# and cargo rebuilds the agent only when its source changed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
ensure_packages qemu-system-x86
ensure_rust

DIR=${PIER_VM_DIR:-/usr/local/lib/pier/vm}
# Load order: each module after those it depends on (from each module's depends=).
MODULES=(
    drivers/virtio/virtio_ring.ko
    drivers/virtio/virtio.ko
    drivers/virtio/virtio_mmio.ko
    drivers/block/virtio_blk.ko
    net/core/failover.ko
    drivers/net/net_failover.ko
    drivers/net/virtio_net.ko
    drivers/char/virtio_console.ko
    fs/fuse/fuse.ko
    fs/fuse/virtiofs.ko
    net/vmw_vsock/vsock.ko
    net/vmw_vsock/vmw_vsock_virtio_transport_common.ko
    net/vmw_vsock/vmw_vsock_virtio_transport.ko
    fs/overlayfs/overlay.ko
)

kernel_in_place() {
    [ -s "$DIR/VERSION" ] && [ -s "$DIR/vmlinuz" ] && [ -s "$DIR/modules/modules.order" ] || return 1
    local m
    for m in "${MODULES[@]}"; do
        [ -s "$DIR/modules/$(basename "$m")" ] || return 1
    done
}

install_kernel() {
    local pkg
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null
        pkg=$(apt-cache depends linux-image-cloud-amd64 |
            awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || {
        echo "apt knows no linux-image-cloud-amd64: add Debian's main archive to the APT sources" >&2
        exit 1
    }
    local version=${pkg#linux-image-}
    echo "== Fetching the VM kernel ($pkg)"
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
        echo "apt-get download $pkg failed: run apt-get update and try again" >&2
        exit 1
    }
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    local stage="$DIR.new"
    rm -rf "$stage"
    install -d "$stage/modules"
    install -m 0644 "$tmp/x/boot/vmlinuz-$version" "$stage/vmlinuz"
    local m
    : >"$stage/modules/modules.order"
    for m in "${MODULES[@]}"; do
        install -m 0644 "$tmp/x/lib/modules/$version/kernel/$m" "$stage/modules/"
        basename "$m" >>"$stage/modules/modules.order"
    done
    echo "$version" >"$stage/VERSION"
    # Keep an agent already built; then swap the directory in whole.
    [ -f "$DIR/pier-guest" ] && cp -p "$DIR/pier-guest" "$stage/"
    rm -rf "$DIR"
    mv "$stage" "$DIR"
    rm -rf "$tmp"
    trap - EXIT
}

if kernel_in_place; then
    echo "== VM kernel $(cat "$DIR/VERSION") already in $DIR"
else
    install -d "$(dirname "$DIR")"
    install_kernel
fi

echo "== Building the VM agent (pier-guest, static)"
# crt-static on the gnu target gives a static glibc binary; the agent uses no NSS. The
# profile is tuned for size (it is loaded into every VM's memory at boot): 1.3 MB
# instead of 1.6. Cargo keeps these artifacts apart from the workspace's own.
cargo rustc --locked -q -p pier-guest --release --bin pier-guest \
    --config 'profile.release.opt-level="s"' --config 'profile.release.lto=true' \
    --config 'profile.release.codegen-units=1' --config 'profile.release.panic="abort"' \
    --config 'profile.release.debug=0' --config 'profile.release.strip=true' \
    -- -C target-feature=+crt-static
bin=${CARGO_TARGET_DIR:-target}/release/pier-guest
if ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "$bin is dynamically linked; the VM's initramfs needs it static" >&2
    exit 1
fi
cmp -s "$bin" "$DIR/pier-guest" || install -m 0755 "$bin" "$DIR/pier-guest"
echo "== VM assets in $DIR: kernel $(cat "$DIR/VERSION"), agent $(stat -c %s "$DIR/pier-guest") bytes"
