"""``%secure_*`` magics: the notebook front end of ``SecureStorage``.

Magic lines take key names, never values: IPython stores a cell's source in history
before running it, so ``%secure_write`` prompts for the value with the kernel's
password input instead, and refuses (without repeating it) anything typed after the
key. Mistakes raise ``UsageError``: one line, no traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Dict, Unicode

from .. import passphrase as prompting
from .._version import __version__
from ..errors import SecureStorageError
from ..secret import Secret, secret_registry
from ..storage import SecureStorage
from .history_guard import split_write_arguments
from .redaction import OutputRedactor

_TOKEN_PREFIXES = re.compile(
    r"^(sk-|sk_|pk_|rk_|ghp_|gho_|ghs_|github_pat_|glpat-|xox[abposr]-|AKIA|AIza|hf_|eyJ)"
)


def looks_like_a_value(text: str) -> bool:
    """Whether ``text`` is more likely a pasted secret than a key name (so: never echo it)."""
    if text in secret_registry or _TOKEN_PREFIXES.match(text):
        return True
    if len(text) < 20:
        return False
    counts = Counter(text)
    entropy = -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())
    has_digit = any(c.isdigit() for c in text)
    has_mixed_case = any(c.islower() for c in text) and any(c.isupper() for c in text)
    return entropy > 3.5 and has_digit and has_mixed_case


def shown(key: str) -> str:
    """A key as it may appear in a message."""
    return (
        "(the name given, not shown: it looks like a value)"
        if looks_like_a_value(key)
        else repr(key)
    )


NO_PROMPT_REMEDY = (
    "This kernel cannot prompt: the notebook runs without stdin (nbclient, papermill, "
    "or a front end without input support). Provision the value beforehand: "
    "`jupyter-secure-storage write KEY` in a terminal (or `... write KEY --stdin` from "
    "a CI secret), with the vault chosen by JUPYTER_SECURE_STORAGE_BACKEND=vault and "
    "unlocked by JUPYTER_SECURE_STORAGE_PASSPHRASE; or read it from a paired device."
)


NO_CONFIRMATION = (
    "pairing asks you to compare a confirmation code, and this kernel cannot ask (the "
    "notebook runs without stdin: nbclient, papermill, or a front end without input "
    "support); nothing was paired. Run it where you can answer, or pass --yes only when "
    "you compare the code some other way (or the device is your own process): --yes alone "
    "trusts whichever device answers the offer first."
)


def _unrecognized_message(function: Any, line: str, magic: str) -> str:
    """Why a magic line was refused. A word shaped like an option (``--widgte``) is named,
    with the nearest real option; anything else is not shown, since a value typed on the
    line must not come back in the error."""
    parser = function.parser
    known = sorted(
        option for action in parser._actions for option in action.option_strings if option
    )
    # Shaped like an option: a dash or two, then a short lowercase word; a token is not.
    typos = [word for word in line.split() if re.fullmatch(r"--?[a-z][a-z-]{0,24}", word)]
    typos = [word for word in typos if word not in known]
    if typos:
        word = typos[0]
        close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f" (options: {', '.join(known)})."
        return f"%{magic}: unknown option {word}{hint} See %{magic}?"
    return (
        f"%{magic}: unexpected extra argument(s), not shown (a value must never "
        f"be typed on a magic line). See %{magic}?"
    )


@magics_class
class SecureStorageMagics(Magics):
    """``%secure_write``, ``%secure_read``, ``%secure_env``, ``%secure_delete``,
    ``%secure_list``, ``%secure_status``, ``%secure_redaction``, ``%secure_pair`` and
    ``%%secure_unredacted``."""

    inject_env = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help=(
            "Environment variables filled from the store when the extension loads, before "
            "any cell runs: {'OPENAI_API_KEY': 'openai'} sets $OPENAI_API_KEY to the value "
            "stored under the key 'openai'. Missing keys are reported, not fatal."
        ),
    ).tag(config=True)

    def __init__(self, shell: Any = None, redactor: OutputRedactor | None = None, **kwargs: Any):
        super().__init__(shell=shell, **kwargs)
        self.store = SecureStorage(parent=self)
        self.redactor = redactor
        self.redaction_installed = False
        #: Replaces getpass when set (tests). Called with the prompt text.
        self.prompt_function: prompting.PromptFunction | None = None
        #: Replaces input() for %secure_pair's code question when set (tests).
        self.confirm_function: prompting.PromptFunction | None = None
        self.injected: dict[str, str] = {}

    # --- helpers ------------------------------------------------------------------------

    def _store(self, namespace: str | None) -> SecureStorage:
        if not namespace or namespace == self.store.namespace:
            return self.store
        try:
            return SecureStorage(
                parent=self, backend=self.store.backend_object, namespace=namespace
            )
        except SecureStorageError as error:
            raise UsageError(str(error)) from None

    def _parse(self, function: Any, line: str, magic: str) -> Any:
        try:
            return parse_argstring(function, line)
        except UsageError as error:
            if "unrecognized arguments" in str(error):
                raise UsageError(_unrecognized_message(function, line, magic)) from None
            raise

    def _where(self, store: SecureStorage) -> str:
        return f"namespace {store.namespace!r}, {store.backend_name}"

    def _read_or_fail(self, store: SecureStorage, key: str, magic: str) -> Secret:
        try:
            secret = store.read(key)
        except SecureStorageError as error:
            raise UsageError(f"%{magic}: {error}") from None
        if secret is None:
            raise UsageError(f"%{magic}: no key named {shown(key)} in {self._where(store)}.")
        return secret

    # --- write ------------------------------------------------------------------------------

    @magic_arguments()
    @argument("key", help="the name to store the value under")
    @argument("-n", "--namespace", help="the namespace (default: the store's)")
    @argument(
        "--widget",
        action="store_true",
        help="show a password widget with Save/Cancel instead of the text prompt",
    )
    @line_magic
    def secure_write(self, line: str) -> None:
        """Store a value under KEY, typed at a password prompt (never on the magic line).

        The value never enters the cell's source, so it stays out of the saved notebook
        and IPython's history. ``--widget`` shows a password field instead (its value
        never stays in widget state). Where the notebook runs without stdin (nbclient,
        papermill) provision the value from a terminal instead:
        ``jupyter-secure-storage write KEY``.
        """
        positionals, _, extras = split_write_arguments(line)
        if extras:
            raise UsageError(
                "%secure_write takes a key name only; the text after it was not stored and is "
                "not shown, and it was kept out of IPython's history. Run `%secure_write KEY` "
                "and paste the value at the prompt. If that text was a real secret, delete "
                "it from this cell now and rotate it."
            )
        if not positionals:
            raise UsageError("%secure_write needs a key name: %secure_write OPENAI_API_KEY")
        args = self._parse(self.secure_write, line, "secure_write")
        store = self._store(args.namespace)
        if args.widget:
            from IPython.display import display

            from ..widgets import SecretPrompt

            try:
                display(SecretPrompt(args.key, store=store))
            except SecureStorageError as error:
                raise UsageError(f"%secure_write: {error}") from None
            return
        try:
            store.contains_key(args.key)  # a bad key, a locked store: fail before asking
            value = prompting.ask(f"Value for {args.key} (hidden): ", self.prompt_function)
        except prompting.NoPrompt:
            raise UsageError(f"%secure_write: {NO_PROMPT_REMEDY}") from None
        except SecureStorageError as error:
            raise UsageError(f"%secure_write: {error}") from None
        if not value:
            raise UsageError("%secure_write: nothing was entered; nothing was stored.")
        try:
            store.write(args.key, value)
        except SecureStorageError as error:
            raise UsageError(f"%secure_write: {error}") from None
        print(f"saved {args.key} · {len(value)} characters · {self._where(store)}")

    # --- read ---------------------------------------------------------------------------------

    @magic_arguments()
    @argument("key", help="the key to read")
    @argument(
        "--env",
        nargs="?",
        const="",
        default=None,
        metavar="VAR",
        help="put the value in os.environ[VAR] (default VAR: the key) instead of returning it",
    )
    @argument("-n", "--namespace", help="the namespace (default: the store's)")
    @line_magic
    def secure_read(self, line: str) -> Secret | None:
        """Read KEY: ``x = %secure_read KEY`` gives a Secret (``x.reveal()`` is the str).

        With ``--env [VAR]`` the value goes into the environment instead, for libraries
        that read their key from there (``%secure_read openai --env OPENAI_API_KEY``).
        """
        args = self._parse(self.secure_read, line, "secure_read")
        store = self._store(args.namespace)
        secret = self._read_or_fail(store, args.key, "secure_read")
        if args.env is None:
            return secret
        variable = args.env or args.key
        _check_variable(variable, "secure_read")
        os.environ[variable] = secret.reveal()
        print(f"${variable} set from {args.key} ({len(secret)} characters)")
        return None

    @magic_arguments()
    @argument("pairs", nargs="+", metavar="KEY[=VAR]", help="keys to put in the environment")
    @argument("-n", "--namespace", help="the namespace (default: the store's)")
    @line_magic
    def secure_env(self, line: str) -> None:
        """Put several keys into ``os.environ``: ``%secure_env openai=OPENAI_API_KEY HF_TOKEN``.

        All or nothing: if a key is missing, no variable is set.
        """
        args = self._parse(self.secure_env, line, "secure_env")
        store = self._store(args.namespace)
        wanted = []
        for pair in args.pairs:
            key, _, variable = pair.partition("=")
            variable = variable or key
            _check_variable(variable, "secure_env")
            wanted.append((key, variable))
        values = {}
        missing = []
        for key, _variable in wanted:
            try:
                secret = store.read(key)
            except SecureStorageError as error:
                raise UsageError(f"%secure_env: {error}") from None
            if secret is None:
                missing.append(shown(key))
            else:
                values[key] = secret
        if missing:
            raise UsageError(
                f"%secure_env: no key named {', '.join(missing)} in {self._where(store)}; "
                "no variable was set."
            )
        for key, variable in wanted:
            os.environ[variable] = values[key].reveal()
        print("set " + ", ".join(f"${variable} (from {key})" for key, variable in wanted))

    # --- delete, list, status -------------------------------------------------------------------

    @magic_arguments()
    @argument("key", help="the key to delete")
    @argument("-n", "--namespace", help="the namespace (default: the store's)")
    @line_magic
    def secure_delete(self, line: str) -> None:
        """Delete KEY from the store (a missing key is not an error)."""
        args = self._parse(self.secure_delete, line, "secure_delete")
        store = self._store(args.namespace)
        try:
            existed = store.contains_key(args.key)
            store.delete(args.key)
        except SecureStorageError as error:
            raise UsageError(f"%secure_delete: {error}") from None
        if existed:
            print(f"deleted {args.key} from {self._where(store)}")
        else:
            print(f"no key named {shown(args.key)} in {self._where(store)}; nothing to delete")

    @magic_arguments()
    @argument("-n", "--namespace", help="the namespace (default: the store's)")
    @argument("--all-namespaces", action="store_true", help="every namespace of the backend")
    @line_magic
    def secure_list(self, line: str) -> Any:
        """A table of the names in the store, with namespace and backend. Never values."""
        args = self._parse(self.secure_list, line, "secure_list")
        store = self._store(args.namespace)
        try:
            namespaces = store.namespaces() if args.all_namespaces else [store.namespace]
            rows = [
                (name, namespace, store.backend_name)
                for namespace in namespaces
                for name in self._store(namespace).keys()
            ]
        except SecureStorageError as error:
            raise UsageError(f"%secure_list: {error}") from None
        return NameTable(rows, store.backend_object.location)

    @line_magic
    def secure_status(self, line: str = "") -> StatusReport:
        """Backend, namespace, and the state of redaction (on/off, values registered)."""
        lines = [f"jupyter-secure-storage {__version__}"]
        try:
            choice = self.store.backend_choice
            lines.append(
                f"backend    : {choice.name} ({self.store.backend_object.location})"
                f" -- {choice.reason}"
            )
        except SecureStorageError as error:
            lines.append(f"backend    : NOT usable -- {error}")
        lines.append(f"namespace  : {self.store.namespace}")
        lines.extend(self._agent_status())
        lines.extend(self._redaction_status())
        if self.injected:
            lines.append(
                "injected   : "
                + ", ".join(f"${var} (from {key})" for var, key in sorted(self.injected.items()))
            )
        return StatusReport(lines)

    def _agent_status(self) -> list[str]:
        """The unlock agent and notebook access, as this kernel sees them."""
        from ..agent_client import AgentClient, AgentNotRunning
        from ..storage import notebook_identity

        client = AgentClient()
        try:
            client.call("ping")
        except (AgentNotRunning, SecureStorageError):
            agent = "none runs for this user (a vault asks each process for its passphrase)"
        else:
            agent = f"running at {client.path}"
            try:
                backend = self.store.backend_object
            except SecureStorageError:
                backend = None
            if backend is not None and backend.name == "vault":
                unlocked = getattr(backend, "is_unlocked", False)
                agent += " -- vault " + (
                    "unlocked" if unlocked else "LOCKED (%secure_unlock, or JupyterLab)"
                )
        notebook = notebook_identity()
        access = self.store.notebook_access
        if notebook is None or access == "off":
            checked = f"not checked here ({access}; no notebook)" if access != "off" else "off"
        else:
            checked = f"on for {os.path.basename(notebook)} (grants in the Secrets sidebar)"
        return [f"agent      : {agent}", f"access     : {checked}"]

    @line_magic
    def secure_lock(self, line: str = "") -> None:
        """Make this user's unlock agent forget every vault key (as the Lock button and
        ``jupyter-secure-storage lock`` do). The next read asks for the passphrase again."""
        from ..agent_client import AgentClient, AgentNotRunning

        if line.strip():
            raise UsageError("%secure_lock takes no arguments.")
        try:
            AgentClient().call("lock")
        except AgentNotRunning:
            print("no unlock agent runs for this user; nothing to lock")
            return
        except SecureStorageError as error:
            raise UsageError(f"%secure_lock: {error}") from None
        print("locked: the unlock agent forgot every vault key")

    @line_magic
    def secure_unlock(self, line: str = "") -> None:
        """Unlock the vault in this user's unlock agent: asks for the passphrase in a
        password field (once for every kernel), or creates the vault the first time."""
        from ..agent_client import AgentNotRunning
        from ..backends.vault import VaultBackend

        if line.strip():
            raise UsageError("%secure_unlock takes no arguments (the passphrase is asked for).")
        try:
            chosen = self.store.backend_object
        except SecureStorageError:
            chosen = None
        vault = chosen if isinstance(chosen, VaultBackend) else VaultBackend(parent=self.store)
        vault.prompt_function = self.prompt_function
        try:
            created = vault.unlock_agent()
        except AgentNotRunning:
            raise UsageError(
                "%secure_unlock: no unlock agent runs for this user. Start JupyterLab (it "
                "runs one) or `jupyter-secure-storage agent`; without one each kernel asks "
                "for the passphrase when it first reads."
            ) from None
        except SecureStorageError as error:
            raise UsageError(f"%secure_unlock: {error}") from None
        print(("created and unlocked" if created else "unlocked") + f" the vault {vault.file}")

    def _redaction_status(self) -> list[str]:
        registered = len(secret_registry)
        redactor = self.redactor
        if redactor is None or not self.redaction_installed:
            return [
                f"redaction  : not available here (no Jupyter kernel session); "
                f"{registered} value(s) registered"
            ]
        matcher = redactor.engine.matcher
        state = "ON" if redactor.enabled else "OFF (c.OutputRedactor.enabled = False)"
        lines = [
            f"redaction  : {state} -- {registered} value(s) registered, "
            f"{len(matcher)} patterns ({matcher.kind}), min length {redactor.min_length}"
        ]
        if redactor.unredacted_cells:
            cells = ", ".join(f"In[{n}]" for n in redactor.unredacted_cells)
            lines.append(f"             cells run with %%secure_unredacted: {cells}")
        lines.append("history    : guarded (values kept out of In, _iN and history.sqlite)")
        return lines

    # --- pairing a device ----------------------------------------------------------------------

    @magic_arguments()
    @argument("--relay", required=True, metavar="URL", help="the relay's ws:// or wss:// URL")
    @argument("--label", help="how the device shows this computer (default: user@hostname)")
    @argument(
        "--offer-file",
        metavar="PATH",
        help="also write the offer URI to PATH (mode 0600) for a device started by a script; "
        "removed when pairing ends",
    )
    @argument(
        "--yes",
        action="store_true",
        help="accept the confirmation code without asking (only when the code is compared "
        "another way, or the device is your own process)",
    )
    @argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the device (default 600)",
    )
    @line_magic
    def secure_pair(self, line: str) -> None:
        """Pair a device (a phone, or `jupyter-secure-storage device`) through a relay.

        Shows a QR code and the offer to copy, waits for the device (the cell blocks),
        then replaces that display with "pairing offer closed": the offer holds a one-time
        secret and does not stay in the saved notebook. Then it shows the confirmation
        code and asks whether the device shows the same one. Use the device afterwards
        with ``SecureStorage(backend="device")``. See docs/pairing.md.
        """
        from IPython.display import display

        from ..bridge.host import PairingAttempt
        from ..bridge.qr import (
            OfferClosed,
            OfferDisplay,
            check_label,
            check_relay_url,
            default_label,
            remove_offer_file,
            run_pairing_step,
            write_offer_file,
        )

        args = self._parse(self.secure_pair, line, "secure_pair")
        try:
            relay = check_relay_url(args.relay)
            label = check_label(args.label if args.label is not None else default_label())
        except ValueError as error:
            raise UsageError(f"%secure_pair: {error}") from None
        if not 0 < args.timeout <= 86_400:
            raise UsageError("%secure_pair: --timeout must be more than 0 and at most 86400.")
        if not args.yes and not self._can_ask():
            raise UsageError(f"%secure_pair: {NO_CONFIRMATION}")
        try:
            attempt = PairingAttempt(relay, label, lifetime=int(min(args.timeout, 600)))
        except SecureStorageError as error:
            raise UsageError(f"%secure_pair: {error}") from None
        offer = attempt.offer
        offer_file = Path(args.offer_file).expanduser() if args.offer_file else None
        handle = display(
            OfferDisplay(
                offer.uri, offer.label, offer.relay, offer.expires, offer.companion_link()
            ),
            display_id=True,
        )
        closed = "pairing offer closed"
        try:
            if offer_file is not None:
                write_offer_file(offer_file, offer.uri)
            pending = run_pairing_step(attempt.wait_for_device(args.timeout), args.timeout)
            closed = f"pairing offer closed: the device {pending.device_name!r} answered"
        except OSError as error:
            closed = "pairing offer closed: not paired"
            raise UsageError(
                f"%secure_pair: cannot write the offer file {offer_file}: {error.strerror}."
            ) from None
        except SecureStorageError as error:
            closed = "pairing offer closed: not paired"
            raise UsageError(f"%secure_pair: {error}") from None
        finally:
            # Whatever happened, the offer leaves the notebook and the disk.
            handle.update(OfferClosed(closed))
            if offer_file is not None:
                remove_offer_file(offer_file, offer.uri)
        print(f"Confirmation code: {pending.code}")
        confirmed = self._confirm_code(attempt, args.yes)
        try:
            record = run_pairing_step(attempt.finish(confirmed), 15)
        except SecureStorageError as error:
            raise UsageError(f"%secure_pair: {error}") from None
        if record is None:
            print(
                "Not paired: the code was not confirmed. The device was told; nothing was "
                "stored. If the device showed another code (or none), someone else may have "
                "used the offer: pair again."
            )
            return
        print(
            f"paired with {record.name} via {record.relay}: use it with "
            'SecureStorage(backend="device").'
        )

    def _can_ask(self) -> bool:
        """Whether the code question can be answered here (a front end with stdin)."""
        if self.confirm_function is not None:
            return True
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return prompting.can_prompt()
        # ipykernel records whether the front end accepts input_request for this cell.
        return bool(getattr(kernel, "_allow_stdin", True))

    def _confirm_code(self, attempt: Any, yes: bool) -> bool:
        from ..bridge.qr import run_pairing_step

        if yes:
            print("confirmed without asking (--yes)")
            return True
        ask = self.confirm_function or input
        try:
            answer = ask("Does the device show the same code? [y/N] ")
        except BaseException as error:
            # Nobody could answer (or the cell was interrupted): refuse, and say so.
            with contextlib.suppress(SecureStorageError):  # else it gives up in 10 minutes
                run_pairing_step(attempt.finish(False), 15)
            if type(error).__name__ == "StdinNotImplementedError" or isinstance(error, EOFError):
                raise UsageError(f"%secure_pair: {NO_CONFIRMATION}") from None
            raise
        return answer.strip().lower() in ("y", "yes")

    # --- opting out of redaction, visibly -----------------------------------------------------

    @line_magic
    def secure_redaction(self, line: str) -> None:
        """``%secure_redaction on`` / ``off``: turn output redaction on or off for this kernel."""
        word = line.strip().lower()
        if self.redactor is None or word not in ("on", "off"):
            raise UsageError("usage: %secure_redaction on|off")
        self.redactor.enabled = word == "on"
        if word == "off":
            print(
                "Output redaction is OFF for this kernel: values printed from now on are shown "
                "and saved with the notebook. `%secure_redaction on` restores it."
            )
        else:
            print("Output redaction is ON.")

    @cell_magic
    def secure_unredacted(self, line: str, cell: str) -> Any:
        """Run this cell with output redaction off (shown by %secure_status)."""
        redactor, shell = self.redactor, self.shell
        if shell is None:
            raise UsageError("%%secure_unredacted needs an IPython shell")
        kernel = getattr(shell, "kernel", None)
        if redactor is not None and kernel is not None:
            parent = kernel.get_parent() or {}
            msg_id = parent.get("header", {}).get("msg_id")
            if msg_id:
                redactor.unredacted_parents.add(msg_id)
                # The running cell's own number (IPython 9 has already counted past it).
                running = getattr(shell.displayhook, "exec_result", None)
                count = getattr(running, "execution_count", None) or shell.execution_count
                redactor.unredacted_cells.append(count)
        print("Output redaction is off for this cell: what it prints is saved in the notebook.")
        result = shell.run_cell(cell, store_history=False)
        return result.result

    # --- injection at kernel start ----------------------------------------------------------------

    def inject_environment(self) -> list[str]:
        """Fill ``os.environ`` from ``inject_env``; return one problem per line (never values)."""
        problems = []
        for variable, key in sorted(self.inject_env.items()):
            try:
                _check_variable(variable, "inject_env")
                secret = self.store.read(key)
            except (SecureStorageError, UsageError) as error:
                problems.append(f"${variable} not set: {error}")
                continue
            if secret is None:
                problems.append(
                    f"${variable} not set: no key named {shown(key)} in {self._where(self.store)}"
                )
                continue
            os.environ[variable] = secret.reveal()
            self.injected[variable] = key
        return problems


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_variable(variable: str, magic: str) -> None:
    if not _VARIABLE.fullmatch(variable):
        raise UsageError(
            f"%{magic}: {shown(variable)} is not an environment variable name "
            "(letters, digits and _, not starting with a digit)."
        )


class NameTable:
    """What ``%secure_list`` returns: names only, as text and as an HTML table."""

    def __init__(self, rows: list[tuple[str, str, str]], location: str) -> None:
        self.rows = rows
        self.location = location

    def __repr__(self) -> str:
        if not self.rows:
            return f"(no keys; backend location: {self.location})"
        width = max(len("NAME"), *(len(r[0]) for r in self.rows))
        ns_width = max(len("NAMESPACE"), *(len(r[1]) for r in self.rows))
        lines = [f"{'NAME':<{width}}  {'NAMESPACE':<{ns_width}}  BACKEND"]
        lines += [f"{n:<{width}}  {ns:<{ns_width}}  {b}" for n, ns, b in self.rows]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        import html

        if not self.rows:
            return f"<i>no keys</i> <small>({html.escape(self.location)})</small>"
        body = "".join(
            "<tr>" + "".join(f"<td><code>{html.escape(c)}</code></td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return (
            "<table><thead><tr><th>name</th><th>namespace</th><th>backend</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def __len__(self) -> int:
        return len(self.rows)

    def names(self) -> list[str]:
        return [row[0] for row in self.rows]


class StatusReport:
    """What ``%secure_status`` returns; shows as text."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def __repr__(self) -> str:
        return "\n".join(self.lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
