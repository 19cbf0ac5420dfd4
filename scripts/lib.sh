# Shared by scripts/*.sh: the venv location and idempotent installers.
VENV="${JSS_VENV:-$PWD/.venv}"
PYTHON="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }

apt_install() {
    local missing=()
    for package in "$@"; do
        # "install ok installed" only: a removed package leaves dpkg -s succeeding.
        [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" = "install ok installed" ] \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

venv_install() {
    if [ ! -x "$VENV/bin/python" ]; then
        step "creating $VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    step "installing the package ($*) into $VENV"
    pip_install -e "$@"
}

# This machine kind's pip.conf names local package folders that may be absent; pip
# warns about each one. Those warnings say nothing about the project.
pip_install() {
    "$VENV/bin/pip" install --quiet "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2)
}

# The web companion (web/): npm ci, then esbuild into jupyter_secure_storage/bridge/web_static/
# (the wheel's build hook, hatch_build.py, does the same when the page is missing or stale).
web_build() {
    # Node.js and npm build the page (never shipped in git); Debian's packages when the
    # machine has none (Node.js 18 there, which esbuild and tsc accept).
    command -v npm >/dev/null || apt_install nodejs npm
    command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ and npm" >&2; return 1; }
    step "building the web companion (npm ci && npm run build in web/)"
    (cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
}

# The JupyterLab extension (labextension/): npm ci, tsc and JupyterLab's builder into
# jupyter_secure_storage/labextension/ (the wheel's build hook does the same), then a link
# to it where the venv's JupyterLab looks for extensions -- what `jupyter labextension
# develop` does -- so an editable install serves what was just built. Needs the venv
# (JupyterLab's builder runs in Python): call it after venv_install.
lab_build() {
    command -v npm >/dev/null || apt_install nodejs npm
    command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ and npm" >&2; return 1; }
    [ -x "$VENV/bin/jupyter-labextension" ] || { echo "JupyterLab is not in $VENV: install it first" >&2; return 1; }
    step "building the JupyterLab extension (npm ci && npm run build in labextension/)"
    # npm ci only when the lock file changed: the editable install's build hook just ran it.
    (cd labextension \
        && { [ node_modules -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error; } \
        && PATH="$VENV/bin:$PATH" npm run --silent build >/dev/null)
    local linked="$VENV/share/jupyter/labextensions/jupyter-secure-storage"
    mkdir -p "$(dirname "$linked")"
    rm -rf "$linked"
    ln -s "$PWD/jupyter_secure_storage/labextension" "$linked"
    "$VENV/bin/jupyter" labextension list 2>&1 | grep "jupyter-secure-storage"
}
