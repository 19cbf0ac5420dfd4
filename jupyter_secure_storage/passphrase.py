"""Getting a passphrase from a person without it touching output, argv or history.

In a terminal this is ``getpass`` (no echo). In a Jupyter kernel ``getpass``
becomes an ``input_request`` with ``password=True``: the front end masks the
field and the answer never enters the notebook. Where nobody can answer
(nbclient, papermill, cron, a pipe) it raises :class:`NoPrompt` so the caller can
name the unattended alternatives instead of hanging.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable

PromptFunction = Callable[[str], str]


class NoPrompt(Exception):
    """Nobody is there to answer a prompt."""


def _kernel_can_prompt() -> bool:
    # ipykernel swaps getpass.getpass for its own stdin-forwarding version while
    # a cell runs; when the front end has no stdin the kernel's version raises
    # StdinNotImplementedError, handled by the caller of ask().
    return getattr(getpass.getpass, "__module__", "getpass") != "getpass"


def can_prompt() -> bool:
    """Whether a prompt could be answered here (a terminal, or a kernel with a front end)."""
    if _kernel_can_prompt():
        return True
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def ask(prompt: str, prompt_function: PromptFunction | None = None) -> str:
    """Ask once, without echo. Raises :class:`NoPrompt` when nobody can answer."""
    if prompt_function is None:
        if not can_prompt():
            raise NoPrompt(prompt)
        prompt_function = getpass.getpass
    try:
        return prompt_function(prompt)
    except (EOFError, KeyboardInterrupt) as error:
        raise NoPrompt(prompt) from error
    except Exception as error:
        # IPython's StdinNotImplementedError (nbclient, papermill: stdin is off).
        if type(error).__name__ == "StdinNotImplementedError":
            raise NoPrompt(prompt) from error
        raise


def ask_new(
    prompt: str, confirm_prompt: str, prompt_function: PromptFunction | None = None
) -> str | None:
    """Ask twice for a new value; return it, or None when the two answers differ."""
    first = ask(prompt, prompt_function)
    second = ask(confirm_prompt, prompt_function)
    return first if first == second else None
