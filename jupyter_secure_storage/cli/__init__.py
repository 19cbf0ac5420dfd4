"""``jupyter-secure-storage`` (also ``jupyter secure-storage``): the command line front end.

Values never travel in argv: ``write`` prompts without echo (twice) or reads one
line from stdin with ``--stdin``; ``read`` prints only to a pipe unless
``--reveal`` is given. Exit codes: 0 success, 1 failure or not found, 2 usage.

The paired-device bridge (docs/pairing.md): ``pair`` shows an offer and pairs a device,
``devices`` lists and revokes paired devices, ``device`` runs the reference device (the
phone side, in Python), ``relay`` the relay between them.

``scan`` finds stored values and token formats in files (docs/scanning.md).

One module per command group: :mod:`.store` (write, read, delete, list, delete-all,
migrate), :mod:`.doctor`, :mod:`.bridge` (relay, pair, devices, device) and :mod:`.scan`;
:mod:`.main` only parses and dispatches.
"""

from .main import main

__all__ = ["main"]
