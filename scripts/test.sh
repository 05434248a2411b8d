#!/usr/bin/env bash
# Runs Pier's whole test suite: installs what the tests need, checks formatting and lints,
# then runs the unit tests and the root-tier tests (real daemons, namespaces, mounts, and
# the real podman and skopeo). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_packages "${RUNTIME_PACKAGES[@]}" gcc podman skopeo runc uidmap docker.io docker-compose curl openssl qemu-utils
ensure_rust

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== tests"
if command -v cargo-nextest >/dev/null; then
    cargo nextest run --locked --workspace --no-fail-fast
else
    cargo test --locked --workspace --no-fail-fast
fi
