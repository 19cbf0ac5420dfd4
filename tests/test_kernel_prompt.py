"""%secure_write in a real kernel asks through the front end's password input, and nothing leaks.

The test plays the front end: it sends an execute_request with stdin allowed, answers
the kernel's input_request, and watches every IOPub message of the request.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_kdf_config
from jupyter_client.manager import KernelManager

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.testing import same


@pytest.fixture
def kernel(vault_env: Path, isolated_jupyter: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"})
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def run(client: Any, code: str, answer: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    """Execute ``code``; answer one input_request with ``answer``; return IOPub messages."""
    msg_id = client.execute(code, allow_stdin=answer is not None)
    request = None
    if answer is not None:
        request = client.get_stdin_msg(timeout=60)
        client.input(answer)
    messages = []
    while True:
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(message)
        if (
            message["header"]["msg_type"] == "status"
            and message["content"]["execution_state"] == "idle"
        ):
            return messages, request


@pytest.mark.timeout(300)
def test_secure_write_uses_the_password_input_and_echoes_nothing(kernel: Any) -> None:
    run(kernel, "%load_ext jupyter_secure_storage")
    value = "typed-" + secrets.token_urlsafe(24)
    messages, request = run(kernel, "%secure_write TYPED_KEY", answer=value)

    assert request is not None
    assert request["header"]["msg_type"] == "input_request"
    assert request["content"]["password"] is True
    assert "TYPED_KEY" in request["content"]["prompt"]
    everything = json.dumps([m["content"] for m in messages], ensure_ascii=False)
    assert f"saved TYPED_KEY · {len(value)} characters" in everything
    assert value not in everything
    assert same(SecureStorage(backend="vault", config=fast_kdf_config()).read("TYPED_KEY"), value)


@pytest.mark.timeout(300)
def test_without_stdin_the_error_says_how_to_provision(kernel: Any) -> None:
    run(kernel, "%load_ext jupyter_secure_storage")
    messages, _ = run(kernel, "%secure_write NEVER_TYPED")
    errors = [m for m in messages if m["header"]["msg_type"] in ("error", "stream")]
    text = json.dumps([m["content"] for m in errors])
    assert "UsageError" in text
    assert "jupyter-secure-storage write" in text
    assert SecureStorage(backend="vault", config=fast_kdf_config()).read("NEVER_TYPED") is None
