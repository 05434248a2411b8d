#!/usr/bin/env bash
# Sets up and runs Pier on this machine: installs what it needs, builds the binary,
# (re)starts the daemon with its embedded store (as the systemd service pier.service when
# systemd runs), makes a base image offline, shows it,
# and runs a first container.
# Idempotent: run it again after pulling new code.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
ensure_packages "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"
ensure_rust

echo "== Building pier (release)"
cargo build --release --locked -p pier
# What `pier run --vm` needs: QEMU, Debian's cloud kernel and the guest agent.
bash scripts/vm-assets.sh
install -m 0755 target/release/pier /usr/local/bin/pier
# Shell completion and man pages, generated from the binary's own command definitions.
install -d /usr/share/bash-completion/completions /usr/share/zsh/vendor-completions \
    /usr/share/fish/vendor_completions.d /usr/local/share/man/man1
pier completion bash >/usr/share/bash-completion/completions/pier
pier completion zsh >/usr/share/zsh/vendor-completions/_pier
pier completion fish >/usr/share/fish/vendor_completions.d/pier.fish
pier man /usr/local/share/man/man1

ROOT=${PIER_ROOT:-/var/lib/pier}
export PIER_HOST=${PIER_HOST:-/run/pier/pier.sock}
LOG=${PIER_LOGFILE:-/var/log/pier.log}

# Stop a daemon already serving this root, so the new binary takes over (one started by
# hand before; systemd restarts its own below).
if [ -d /run/systemd/system ] && systemctl is-active --quiet pier.service; then
    :
elif [ -s "$ROOT/daemon.lock" ]; then
    pid=$(cat "$ROOT/daemon.lock")
    if kill -0 "$pid" 2>/dev/null; then
        echo "== Stopping the running daemon (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
fi

if [ -d /run/systemd/system ]; then
    echo "== Installing and starting pier.service (state in $ROOT, socket $PIER_HOST; systemctl status pier, journalctl -u pier)"
    sed -e "s|--root /var/lib/pier|--root $ROOT|" \
        -e "s|--socket /run/pier/pier.sock --docker-socket /run/pier/docker.sock|--socket $PIER_HOST --docker-socket $(dirname "$PIER_HOST")/docker.sock|" \
        scripts/pier.service >/etc/systemd/system/pier.service
    systemctl daemon-reload
    systemctl enable pier.service
    systemctl restart pier.service
else
    # No systemd (a container, a CI machine): start the daemon by hand.
    echo "== Starting the daemon (state in $ROOT, socket $PIER_HOST, log $LOG)"
    nohup pier daemon --root "$ROOT" --socket "$PIER_HOST" >>"$LOG" 2>&1 &
fi
for _ in $(seq 100); do pier info >/dev/null 2>&1 && break; sleep 0.1; done
pier info

echo "== Making a base image from the host's busybox (no network needed)"
pier image inspect busybox:latest >/dev/null 2>&1 || pier image from-host busybox:latest /bin/busybox
pier images

echo "== Running a first container"
pier run --rm --hostname first busybox sh -c 'echo "Hello from $(hostname), a Pier container running $(uname -s) as uid $(id -u)"'

echo "== Running the same image as a VM (its own kernel; a few seconds under emulation)"
pier run --rm --vm --hostname first-vm busybox sh -c 'echo "Hello from $(hostname), a Pier VM running Linux $(uname -r)"'
