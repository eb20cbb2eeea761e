"""The chaos suite (`make chaos`, i.e. `pytest -m chaos`): faults injected into real runs, and fuzzed frames.

Chaos tests are slow, so a plain `pytest` / `make test` skips them; they run when the `-m` expression names `chaos`.
Each test reports its figures (frames fuzzed, recovery times, counts compared) through the `figures` fixture; the
terminal summary prints them all, and docs/RELIABILITY.md records a run.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

_FIGURES: dict[str, dict] = defaultdict(dict)


def pytest_collection_modifyitems(config, items):
    if "chaos" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="chaos suite: run with `make chaos` (pytest -m chaos)")
    for item in items:
        if "chaos" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def figures(request) -> dict:
    """A dict this test fills with its figures (printed at the end of the run; written to $ARB_CHAOS_FIGURES)."""
    return _FIGURES[request.node.nodeid.split("::")[-1]]


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("chaos figures")
    for name, values in sorted(_FIGURES.items()):
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
    path = os.environ.get("ARB_CHAOS_FIGURES")
    if path:
        with open(path, "w") as out:
            json.dump(_FIGURES, out, indent=1, sort_keys=True)


from tests.integration.conftest import spark  # noqa: E402,F401  (the shared local[2] session, for the e2e cases)
