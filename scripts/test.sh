#!/usr/bin/env bash
# Install everything the tests need and run them all: Debian packages (a real Secret
# Service: gnome-keyring under dbus-run-session), a venv with the package and its
# test extras, then ruff, mypy and pytest. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

apt_install gnome-keyring dbus libsecret-tools chromium redis-server
web_build
venv_install ".[test]"
lab_build
# A real plaintext keyring (keyrings.alt), kept out of the venv: only the tests
# that prove it is refused put it on their PYTHONPATH.
pip_install --no-deps --upgrade --target "$VENV/extras/keyrings-alt" "keyrings.alt>=5"

step "lint (ruff), import rules (lint-imports; docs/architecture.md) and types (mypy, tsc)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/lint-imports" --no-cache
"$VENV/bin/mypy"
(cd web && npm run --silent typecheck)
(cd labextension && npm run --silent typecheck)

step "web companion: Noise and wire formats against the vectors (node --test)"
(cd web && npm test --silent)

step "tests, under a real Secret Service with a throwaway HOME"
test_home="$(mktemp -d)"
trap 'rm -rf "$test_home"' EXIT
# The keyring's unlock password for the throwaway login keyring; not a secret.
export JSS_TEST_KEYRING_PASSWORD="throwaway-test-keyring"
HOME="$test_home" XDG_DATA_HOME="$test_home/.local/share" XDG_CONFIG_HOME="$test_home/.config" \
JSS_REQUIRE_SECRET_SERVICE=1 JSS_REQUIRE_BROWSER=1 JSS_REQUIRE_REDIS=1 \
  dbus-run-session -- bash -c '
    set -e
    printf %s "$JSS_TEST_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
    exec "$0" -m pytest "$@"' "$VENV/bin/python" "$@" 2> >(grep -v "Failed to set fd limit" >&2)
