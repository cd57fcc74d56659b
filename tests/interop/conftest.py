"""The interop suite: every test here is marked ``interop``; outcomes are written as JSON at the
end of the session when ``NIRBRIDGE_INTEROP_JSON`` names a file (see ``interop_common.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from interop_common import OUTCOMES, results_path

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


def pytest_sessionfinish(session, exitstatus):
    path = results_path()
    if path and OUTCOMES:
        worker = os.environ.get("PYTEST_XDIST_WORKER")  # under pytest-xdist each worker writes its own part
        out = Path(f"{path}.{worker}" if worker else path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(OUTCOMES, indent=1, sort_keys=True))


@pytest.fixture(params=["reference", "jax", "torch"])
def backend(request):
    if request.param != "reference":
        pytest.importorskip(request.param)  # the core suite runs without frameworks; CI installs both
    return request.param
