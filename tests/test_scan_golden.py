"""Golden files, the nbstripout way: each ``tests/golden/NAME.ipynb`` beside the
``NAME.expected.ipynb`` that ``scan --fix`` must turn it into. Adding a case is adding
two files.

No token is committed: the notebooks hold slots, filled at test time --
``{{token:KIND:SEED}}`` with a fake token from tests/scan_samples.py, and
``{{stored:NAME:ENCODING}}`` with one encoding (literal, base64, base64url, url-quoted,
escaped) of a stored test value, found through ``KnownValues.from_values`` with a fixed
test master key. Expected files may hold slots too, where a value must survive (an
allowlisted line). ``JSS_GOLDEN_UPDATE=1`` writes missing expected files from the
output, with the values turned back into slots -- review them before committing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from scan_samples import token
from test_scan_cli import STORED_VALUE, encodings

from jupyter_secure_storage.scan import Scanner
from jupyter_secure_storage.scan.allowlist import Allowlist
from jupyter_secure_storage.scan.files import FileScanner
from jupyter_secure_storage.scan.known import KnownValues
from jupyter_secure_storage.scan.patterns import PatternDetector

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p for p in GOLDEN.glob("*.ipynb") if not p.name.endswith(".expected.ipynb"))
MASTER_KEY = bytes(range(32))  # the fixed test master key of the fingerprints
STORED = {
    "WAREHOUSE_PASSWORD": STORED_VALUE,
    "API_TOKEN": "tok_" + "Qm9uam91ciBsZXMgdGVzdHMh-7",
    # A stored value that is also a token format: the name wins in the marker.
    "OPENAI_API_KEY": token("openai-api-key", "stored"),
}
SLOT = re.compile(r"\{\{(token|stored):([A-Za-z0-9_-]+):([A-Za-z0-9-]+)\}\}")


def slot_value(match: re.Match[str]) -> str:
    source, what, which = match.groups()
    if source == "token":
        return token(what, int(which))
    return encodings(STORED[what])[which]


def fill(text: str) -> tuple[str, dict[str, str]]:
    """The notebook's JSON text with every slot filled (JSON-escaped); and slot by value."""
    slots: dict[str, str] = {}

    def replace(match: re.Match[str]) -> str:
        value = slot_value(match)
        slots[value] = match.group(0)
        return json.dumps(value, ensure_ascii=False)[1:-1]

    return SLOT.sub(replace, text), slots


def scanner() -> Scanner:
    allowlist = Allowlist()
    known = KnownValues.from_values({v: k for k, v in STORED.items()}, master=MASTER_KEY)
    return Scanner([allowlist.filter(known), allowlist.filter(PatternDetector())])


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 5
    for case in CASES:
        assert SLOT.search(case.read_text()), case.name


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_scan_fix_turns_the_notebook_into_its_expected_form(case: Path, tmp_path: Path) -> None:
    filled, slots = fill(case.read_text(encoding="utf-8"))
    path = tmp_path / case.name
    path.write_text(filled, encoding="utf-8")
    result = FileScanner(scanner(), fix=True).scan_paths([path])
    assert result.errors == []
    assert result.skipped == []
    output = path.read_text(encoding="utf-8")
    nbformat.validate(nbformat.reads(output, as_version=4))
    expected_path = case.with_name(case.stem + ".expected.ipynb")
    if not expected_path.exists() and os.environ.get("JSS_GOLDEN_UPDATE") == "1":
        unfilled = output
        for value, slot in sorted(slots.items(), key=lambda item: -len(item[0])):
            unfilled = unfilled.replace(json.dumps(value, ensure_ascii=False)[1:-1], slot)
        expected_path.write_text(unfilled, encoding="utf-8")
    expected, _ = fill(expected_path.read_text(encoding="utf-8"))
    assert output == expected  # --assert=plain: a mismatch never prints the values
    # A second pass finds nothing more: markers are not secrets.
    again = FileScanner(scanner(), fix=True).scan_paths([path])
    assert again.findings == []
