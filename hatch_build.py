"""Hatch build hook: build the two front ends into the package before packaging.

- The web companion (``web/``): TypeScript bundled by esbuild (web/build.mjs) into
  ``jupyter_secure_storage/bridge/web_static/``.
- The JupyterLab extension (``labextension/``): ``tsc``, then ``jupyter labextension
  build`` (JupyterLab's builder, from npm) into ``jupyter_secure_storage/labextension/``,
  which the wheel installs as ``share/jupyter/labextensions/jupyter-secure-storage/``.
  JupyterLab's builder runs in Python, so ``jupyterlab`` is a build requirement.

Both outputs are ignored by git and shipped by the wheel (``artifacts`` and
``shared-data`` in pyproject.toml). For each, this hook runs ``npm ci`` (when
``node_modules`` is missing or older than the lock file) and ``npm run build`` whenever
the output is missing or older than its sources. It runs for wheels, sdists and editable
installs.

- No source folder (building from an sdist that already holds the output): nothing to do.
- No ``npm``: a wheel or an sdist fails with the cause and the remedy; an editable install
  goes on without that front end (with a warning saying how to build it).
- ``JSS_SKIP_WEB_BUILD=1``: never build either (the outputs must then be there for a wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class FrontEnd(NamedTuple):
    """A folder of TypeScript that npm builds into a folder of the package. (Not a
    dataclass: hatchling loads this file without registering it as a module.)"""

    title: str
    folder: str
    sources: tuple[str, ...]
    output: Path
    marker: str  # a file of the output that exists once a build has succeeded


FRONT_ENDS = (
    FrontEnd(
        title="web companion",
        folder="web",
        sources=("src", "build.mjs", "package.json", "package-lock.json", "tsconfig.json"),
        output=Path("jupyter_secure_storage", "bridge", "web_static"),
        marker="index.html",
    ),
    FrontEnd(
        title="JupyterLab extension",
        folder="labextension",
        sources=("src", "style", "package.json", "package-lock.json", "tsconfig.json"),
        output=Path("jupyter_secure_storage", "labextension"),
        marker="package.json",
    ),
)


def _newest(paths: list[Path]) -> float:
    """The newest file's mtime (files only: an unpacked sdist gives folders a fresh one)."""
    files = [p for path in paths if path.exists() for p in [path, *path.rglob("*")]]
    return max((p.stat().st_mtime for p in files if p.is_file()), default=0.0)


class FrontEndBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        for front_end in FRONT_ENDS:
            self._build(front_end, version)

    def _build(self, front_end: FrontEnd, version: str) -> None:
        root = Path(self.root)
        source = root / front_end.folder
        built = root / front_end.output / front_end.marker
        if not (source / "package.json").exists():
            if not built.exists():
                raise RuntimeError(
                    f"The {front_end.title} is missing: neither {front_end.folder}/ nor "
                    f"{front_end.output}/ is here. Build from a git checkout (with Node.js "
                    "and npm) or from the sdist."
                )
            return
        sources = [source / s for s in front_end.sources]
        stale = not built.exists() or _newest(sources) > built.stat().st_mtime
        if not stale or os.environ.get("JSS_SKIP_WEB_BUILD") == "1":
            if not built.exists() and self.target_name == "wheel" and version != "editable":
                raise RuntimeError(f"JSS_SKIP_WEB_BUILD=1, but {front_end.output}/ is not built.")
            return
        npm = shutil.which("npm")
        if npm is None:
            message = (
                f"Building the {front_end.title} ({front_end.folder}/) needs Node.js 18+ and "
                "npm, and npm is not on PATH. Install them (Debian: apt-get install nodejs "
                "npm) and build again."
            )
            if version == "editable":
                self.app.display_warning(message + f" Going on without the {front_end.title}.")
                return
            raise RuntimeError(message)
        # `jupyter labextension build` must be the one installed beside this Python (the
        # build environment's), whatever PATH says.
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        modules = source / "node_modules"
        lock = source / "package-lock.json"
        if not modules.exists() or lock.stat().st_mtime > modules.stat().st_mtime:
            self.app.display_info(f"{front_end.title}: npm ci")
            subprocess.run(  # noqa: S603
                [npm, "ci", "--no-audit", "--no-fund"], cwd=source, env=env, check=True
            )
        self.app.display_info(f"{front_end.title}: npm run build")
        subprocess.run([npm, "run", "build"], cwd=source, env=env, check=True)  # noqa: S603
        if not built.exists():
            raise RuntimeError(f"npm run build did not produce {built.relative_to(root)}")
