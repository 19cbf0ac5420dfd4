"""``python -m jupyter_secure_storage``: the same as the ``jupyter-secure-storage`` command."""

import sys

from .cli import main

sys.exit(main())
