"""A pre-save hook that keeps secrets out of what Jupyter Server writes to disk.

The kernel scrubs what it sends, but the front end writes the file -- and a front end
can hold a typed value the kernel never saw yet (a password field committed while the
kernel is busy, then a save or an autosave). So every notebook save passes here first:
the value of every password widget in ``metadata.widgets`` is blanked.

Fail closed (field-notes.md: an ordinary exception in a pre-save hook is logged and the
file is saved anyway): any failure is turned into an HTTP error, the save is refused,
the person sees why, and the file on disk stays as it was. Checkpoints are made from
the saved file, so they are scrubbed too.
"""

from __future__ import annotations

import logging
from typing import Any

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Models whose value is a secret by construction: ipywidgets' Password (and
# jupyter_secure_storage's SecretField, which uses the same front-end model).
SECRET_MODELS = {"PasswordModel"}

log = logging.getLogger("jupyter_secure_storage.server")


def blank_password_widgets(notebook: dict[str, Any]) -> int:
    """Empty the value of every password widget in the notebook's saved widget state."""
    widgets = notebook.get("metadata", {}).get("widgets")
    if not widgets:
        return 0
    state = widgets.get(WIDGET_STATE, {}).get("state", {})
    blanked = 0
    for model in state.values():
        if model.get("model_name") in SECRET_MODELS:
            values = model.get("state", {})
            if values.get("value"):
                values["value"] = ""
                blanked += 1
    return blanked


def scrub_before_save(model: dict[str, Any], path: str, **_kwargs: Any) -> None:
    """The pre-save hook. Raises ``tornado.web.HTTPError`` (refusing the save) on any failure."""
    from tornado.web import HTTPError

    try:
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return
        blanked = blank_password_widgets(model["content"])
        if blanked:
            log.info("blanked %d password widget value(s) in %s", blanked, path)
    except Exception as error:
        log.error(
            "jupyter-secure-storage refused to save %s: the secret check failed (%s)",
            path,
            type(error).__name__,
        )
        raise HTTPError(
            500,
            reason=(
                "jupyter-secure-storage could not check this notebook for secrets, so it "
                f"was not saved ({type(error).__name__}). The file on disk is unchanged."
            ),
        ) from None


def load_save_guard(serverapp: Any) -> None:
    serverapp.contents_manager.register_pre_save_hook(scrub_before_save)
    serverapp.log.info("jupyter-secure-storage: notebooks are checked for secrets before saving")
