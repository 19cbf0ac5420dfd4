"""The server's pre-save hook: password widget values are blanked, and a failure refuses the save.

The real-server path (JupyterLab saving through the contents API) is exercised by
tests/test_browser.py; these check the hook's logic on notebook models directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from tornado.web import HTTPError

from jupyter_secure_storage.server.save_guard import (
    WIDGET_STATE,
    blank_password_widgets,
    scrub_before_save,
)
from jupyter_secure_storage.testing import canary


def notebook_with(models: dict[str, Any]) -> dict[str, Any]:
    return {
        "cells": [],
        "metadata": {"widgets": {WIDGET_STATE: {"version_major": 2, "state": models}}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def model(name: str, value: str) -> dict[str, Any]:
    return {
        "model_name": name,
        "model_module": "@jupyter-widgets/controls",
        "state": {"value": value},
    }


def test_password_values_are_blanked_and_others_kept() -> None:
    typed = canary()
    notebook = notebook_with(
        {
            "a": model("PasswordModel", typed),
            "b": model("TextModel", "visible"),
            "c": model("PasswordModel", ""),
        }
    )
    assert blank_password_widgets(notebook) == 1
    state = notebook["metadata"]["widgets"][WIDGET_STATE]["state"]
    assert state["a"]["state"]["value"] == ""
    assert state["b"]["state"]["value"] == "visible"


def test_the_hook_scrubs_notebook_models_in_place() -> None:
    typed = canary()
    saved = {"type": "notebook", "content": notebook_with({"a": model("PasswordModel", typed)})}
    scrub_before_save(model=saved, path="x.ipynb", contents_manager=None)
    assert typed not in str(saved)


def test_files_and_notebooks_without_widgets_pass_untouched() -> None:
    plain = {"type": "file", "content": "text", "format": "text"}
    scrub_before_save(model=plain, path="x.txt", contents_manager=None)
    assert plain["content"] == "text"
    bare = {"type": "notebook", "content": {"cells": [], "metadata": {}}}
    scrub_before_save(model=bare, path="x.ipynb", contents_manager=None)


def test_a_failure_refuses_the_save_with_a_reason() -> None:
    broken = {"type": "notebook", "content": {"metadata": {"widgets": {WIDGET_STATE: []}}}}
    with pytest.raises(HTTPError) as raised:
        scrub_before_save(model=broken, path="x.ipynb", contents_manager=None)
    assert raised.value.status_code == 500
    assert "not saved" in (raised.value.reason or "")
