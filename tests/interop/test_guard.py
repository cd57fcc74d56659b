"""A missing library must never pass silently: the library tests skip (``importorskip``) where a
library is not installed, so in CI (``CI=true``) this test fails for every expected library that
does not import. Locally it reports what is missing and skips."""

from __future__ import annotations

import importlib
import os
import warnings

import pytest

#: the libraries whose interop tests CI must run
EXPECTED = ("snntorch", "norse", "sinabs", "spikingjelly", "spyx", "rockpool")


def _missing() -> dict[str, str]:
    out = {}
    for name in EXPECTED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. norse's torch.jit.script DeprecationWarning at import
                importlib.import_module(name)
        except Exception as e:  # an ImportError, or a library that breaks while importing
            out[name] = f"{type(e).__name__}: {e}"
    return out


def test_expected_libraries_are_installed_in_ci():
    missing = _missing()
    if not missing:
        return
    text = "; ".join(f"{k} ({v})" for k, v in missing.items())
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"interop libraries missing in CI: {text}. Fix: pip install -r requirements/interop.txt "
                    "and pip install --no-deps -r requirements/interop-nodeps.txt")
    pytest.skip(f"not installed here: {text}")
