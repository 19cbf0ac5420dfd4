#!/usr/bin/env bash
# Set up and run the main job on a fresh machine: install the package into .venv, then
# store, list, read and delete a secret -- in the OS keystore when one is usable here,
# otherwise in an encrypted vault (a throwaway one under .demo/ for this demo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

web_build
venv_install ".[examples]"
lab_build
export PATH="$VENV/bin:$PATH"
jss() { jupyter-secure-storage --namespace demo "$@"; }

step "what this machine offers (jupyter-secure-storage doctor)"
jupyter-secure-storage doctor || true

chosen="$(jupyter-secure-storage doctor --format json | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["chosen"])')"
if [ "$chosen" = "vault" ] && [ -z "${JUPYTER_SECURE_STORAGE_VAULT:-}" ]; then
    # A throwaway vault for the demo, with a random passphrase so the notebook's kernel
    # (which has nobody to ask) can open it too. Your own vault takes your passphrase
    # from a prompt, or from JUPYTER_SECURE_STORAGE_PASSPHRASE for unattended runs.
    export JUPYTER_SECURE_STORAGE_VAULT="$PWD/.demo/demo-vault.jssv"
    JUPYTER_SECURE_STORAGE_PASSPHRASE="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
    export JUPYTER_SECURE_STORAGE_PASSPHRASE
    rm -f "$JUPYTER_SECURE_STORAGE_VAULT"
    echo "(no OS keystore here: the demo uses a throwaway vault at $JUPYTER_SECURE_STORAGE_VAULT)"
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

step "run notebooks/01-getting-started.ipynb in a real kernel (saved to .demo/)"
"$VENV/bin/python" - <<'PY'
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

notebook = nbformat.read("notebooks/01-getting-started.ipynb", as_version=4)
NotebookClient(notebook, kernel_name="python3", timeout=300).execute()
Path(".demo").mkdir(exist_ok=True)
nbformat.write(notebook, ".demo/01-getting-started.ipynb")
for cell in notebook.cells:
    if cell.cell_type != "code":
        continue
    print(f"In [{cell.execution_count}]: {cell.source.splitlines()[0]}")
    for output in cell.outputs:
        text = output.get("text") or output.get("data", {}).get("text/plain", "")
        for line in text.rstrip().splitlines()[:6]:
            print(f"    {line}")
PY

step "check the saved notebook for secrets (stored values in any encoding, token formats)"
jss scan .demo/01-getting-started.ipynb

echo
echo "Done: the executed notebook is .demo/01-getting-started.ipynb (no value in it)."
echo "Next: 'jupyter-secure-storage write OPENAI_API_KEY' stores a real key (prompted, no echo)."
echo
echo "Start JupyterLab (installed in .venv):"
echo "    $VENV/bin/jupyter lab$([ "$(id -u)" -eq 0 ] && echo ' --allow-root')"
echo "The key icon on the left opens the Secrets sidebar. Without an OS keystore it asks"
echo "once for the vault's passphrase (or to choose one), for every notebook of the session;"
echo "a notebook reads a key once you turn it on under 'Notebook access' (docs/jupyterlab.md)."
