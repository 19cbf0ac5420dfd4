"""Hatch build hook: build the web companion (web/) into the package before packaging.

The page is TypeScript bundled by esbuild (web/build.mjs) into
``jupyter_secure_storage/bridge/web_static/``, which git ignores and the wheel ships
(``artifacts`` in pyproject.toml). This hook runs ``npm ci`` (when ``node_modules`` is
missing or older than the lock file) and ``npm run build`` whenever the built page is
missing or older than its sources. It runs for wheels, sdists and editable installs.

- No ``web/`` folder (building from an sdist that already holds the page): nothing to do.
- No ``npm``: a wheel or an sdist fails with the cause and the remedy; an editable install
  goes on without the page (``/device/`` then explains how to build it).
- ``JSS_SKIP_WEB_BUILD=1``: never build (the page must then be there for a wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = ("src", "build.mjs", "package.json", "package-lock.json", "tsconfig.json")
OUTPUT = Path("jupyter_secure_storage", "bridge", "web_static")


def _newest(paths: list[Path]) -> float:
    """The newest file's mtime (files only: an unpacked sdist gives folders a fresh one)."""
    files = [p for path in paths if path.exists() for p in [path, *path.rglob("*")]]
    return max((p.stat().st_mtime for p in files if p.is_file()), default=0.0)


class WebCompanionBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        web = root / "web"
        page = root / OUTPUT / "index.html"
        if not (web / "package.json").exists():
            if not page.exists():
                raise RuntimeError(
                    f"The web companion is missing: neither web/ nor {OUTPUT}/ is here. "
                    "Build from a git checkout (with Node.js and npm) or from the sdist."
                )
            return
        stale = not page.exists() or _newest([web / s for s in SOURCES]) > page.stat().st_mtime
        if not stale or os.environ.get("JSS_SKIP_WEB_BUILD") == "1":
            if not page.exists() and self.target_name == "wheel" and version != "editable":
                raise RuntimeError(f"JSS_SKIP_WEB_BUILD=1, but {OUTPUT}/ is not built.")
            return
        npm = shutil.which("npm")
        if npm is None:
            message = (
                "Building the web companion (web/) needs Node.js 20+ and npm, and npm is "
                "not on PATH. Install them (Debian: apt-get install nodejs npm) and build again."
            )
            if version == "editable":
                self.app.display_warning(message + " Going on without the page.")
                return
            raise RuntimeError(message)
        modules = web / "node_modules"
        if (
            not modules.exists()
            or (web / "package-lock.json").stat().st_mtime > modules.stat().st_mtime
        ):
            self.app.display_info("web companion: npm ci")
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=web, check=True)  # noqa: S603
        self.app.display_info("web companion: npm run build")
        subprocess.run([npm, "run", "build"], cwd=web, check=True)  # noqa: S603
        if not page.exists():
            raise RuntimeError(f"npm run build did not produce {OUTPUT}/index.html")
