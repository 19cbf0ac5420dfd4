#!/usr/bin/env bash
# Run the storage benchmarks (bench/storage.py) under a real, throwaway Secret Service:
# installs what they need (Debian: gnome-keyring, dbus, libsecret-tools; the package
# into the venv), then starts gnome-keyring inside dbus-run-session with a temporary
# HOME, so no real keyring is ever touched.
# Usage: bash bench/run.sh [bench/storage.py options, e.g. --quick]
# Results: the table on stdout, and bench/results/storage.json.
# Then the web companion's read round trip beside the reference device (bench/web.py:
# Debian's Chromium, the built page, loopback only; bench/results/web.json); --quick
# makes that one a smoke test too.
# Then the scan benchmark (bench/scan.py: `jupyter-secure-storage scan` vs detect-secrets
# 1.5.0, installed into the venv here, on 2,000 generated notebooks; bench/results/scan.json);
# --quick makes that one a smoke test too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install gnome-keyring dbus libsecret-tools
venv_install .

step "storage benchmarks, under a real Secret Service with a throwaway HOME"
bench_home="$(mktemp -d)"
trap 'rm -rf "$bench_home"' EXIT
# The unlock password of the throwaway login keyring; not a secret.
export JSS_BENCH_KEYRING_PASSWORD="throwaway-bench-keyring"
HOME="$bench_home" XDG_DATA_HOME="$bench_home/.local/share" XDG_CONFIG_HOME="$bench_home/.config" \
  dbus-run-session -- bash -c '
    printf %s "$JSS_BENCH_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
    exec "$0" bench/storage.py --require-keyring "$@"' "$VENV/bin/python" "$@" \
  2> >(grep -v "Failed to set fd limit" >&2)

step "web companion benchmark (bench/web.py: the page in Chromium vs the reference device)"
apt_install chromium
web_build
pip_install "playwright>=1.65"
web_args=()
for arg in "$@"; do [ "$arg" = "--quick" ] && web_args+=(--quick); done
"$VENV/bin/python" bench/web.py "${web_args[@]}"

step "scan benchmark: jupyter-secure-storage scan vs detect-secrets 1.5.0"
pip_install "detect-secrets==1.5.0"
scan_args=()
for argument in "$@"; do
    if [ "$argument" = "--quick" ]; then scan_args+=(--quick); fi
done
"$VENV/bin/python" bench/scan.py "${scan_args[@]}"

step "save guard benchmark (bench/save_guard.py: the pre-save scrub vs serialising the notebook)"
"$VENV/bin/python" bench/save_guard.py "${scan_args[@]}"

step "unlock agent benchmark (bench/agent.py: reads through the agent vs in-process; the CLI read as a whole process)"
"$VENV/bin/python" bench/agent.py "${scan_args[@]}"
