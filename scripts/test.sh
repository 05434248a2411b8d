#!/usr/bin/env bash
# Runs Pier's whole test suite: installs what the tests need, checks formatting and lints,
# then runs the unit tests and the root-tier tests (real daemons, namespaces, mounts, and
# the real podman and skopeo). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
# etcd-server: pier-store's etcd backend is tested against a real etcd (unit tier, no root).
ensure_packages "${RUNTIME_PACKAGES[@]}" "${BUILD_PACKAGES[@]}" etcd-server podman skopeo runc uidmap docker.io docker-compose curl openssl qemu-utils
# Headless Chromium driven by Selenium, for the dashboard's browser test
# (crates/pier/tests/dashboard.rs).
ensure_packages chromium chromium-driver python3-selenium
ensure_rust
# docker-py, a client the Docker API tests drive (crates/pier/tests/common: DOCKER_PY).
ensure_docker_py
# promtool, which checks the daemon's /metrics (crates/pier/tests/metrics.rs).
ensure_promtool
# QEMU, the VM kernel and the static guest agent, for the VM tests (crates/pier/tests/vm.rs).
bash scripts/vm-assets.sh

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== tests"
# The root tier (real daemons, namespaces, mounts, nftables) is marked `#[ignore]` so that a
# plain `cargo test --workspace` as any user runs the rest and is green; this script is the
# explicit switch that runs both tiers.
if command -v cargo-nextest >/dev/null; then
    cargo nextest run --locked --workspace --no-fail-fast --run-ignored all
else
    cargo test --locked --workspace --no-fail-fast -- --include-ignored
fi
