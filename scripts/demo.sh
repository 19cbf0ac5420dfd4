#!/usr/bin/env bash
# Set up and run the main job on a fresh machine: install the package into .venv, then
# store, list, read and delete a secret -- in the OS keystore when one is usable here,
# otherwise in an encrypted vault (a throwaway one under .demo/ for this demo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv_install .
export PATH="$VENV/bin:$PATH"
jss() { jupyter-secure-storage --namespace demo "$@"; }

step "what this machine offers (jupyter-secure-storage doctor)"
jupyter-secure-storage doctor || true

chosen="$(jupyter-secure-storage doctor --format json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["chosen"])')"
if [ "$chosen" = "vault" ] && [ -z "${JUPYTER_SECURE_STORAGE_VAULT:-}" ]; then
    export JUPYTER_SECURE_STORAGE_VAULT="$PWD/.demo/demo-vault.jssv"
    if [ -z "${JUPYTER_SECURE_STORAGE_PASSPHRASE:-}" ] && ! [ -t 0 ]; then
        # Nobody at a terminal to choose a passphrase: this throwaway demo vault gets a
        # random one. Real vaults take yours from a prompt or the environment.
        JUPYTER_SECURE_STORAGE_PASSPHRASE="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
        export JUPYTER_SECURE_STORAGE_PASSPHRASE
        rm -f "$JUPYTER_SECURE_STORAGE_VAULT"
        echo "(no terminal: the demo vault at $JUPYTER_SECURE_STORAGE_VAULT gets a random passphrase)"
    fi
fi

step "store a token: the value goes through stdin, never argv"
"$VENV/bin/python" -c 'import secrets; print("demo-" + secrets.token_urlsafe(32))' | jss write DEMO_API_TOKEN --stdin

step "list names (never values)"
jss list

step "read it from Python: a Secret that masks itself until .reveal()"
"$VENV/bin/python" - <<'PY'
from jupyter_secure_storage import SecureStorage

store = SecureStorage(namespace="demo")
token = store.read("DEMO_API_TOKEN")
print(f"backend : {store.backend_name} ({store.backend_object.location})")
print(f"repr    : {token!r}")
print(f"print() : {token}")
print(f"length  : {len(token)} characters; starts with 'demo-': {token.reveal().startswith('demo-')}")
PY

step "read it for a script: only to a pipe"
echo "characters piped: $(jss read DEMO_API_TOKEN | wc -c)"

step "delete it"
jss delete DEMO_API_TOKEN
jss list
echo
echo "Done. Next: 'jupyter-secure-storage write OPENAI_API_KEY' stores a real key (prompted, no echo)."
