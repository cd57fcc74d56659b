"""The public surface of nirbridge, pinned: a name added to or removed from ``nirbridge.__all__``
must be a deliberate change of this file. ``import nirbridge`` must not import a framework."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import nirbridge as nb
from nirbridge import errors

PUBLIC = {
    "Dynamics",
    "Graph",
    "Kernel",
    "NODE_SPECS",
    "NirBridgeError",
    "NirBridgeWarning",
    "Node",
    "NodeSpec",
    "Report",
    "available_backends",
    "compare",
    "errors",
    "examples",
    "from_equinox",
    "from_flax",
    "from_jax",
    "from_torch",
    "load",
    "presets",
    "register_backend",
    "register_kernel",
    "register_node",
    "save",
    "simulate",
    "to_equinox",
    "to_flax",
    "to_jax",
    "to_torch",
    "__version__",
}
# names whose module imports a framework: nirbridge loads them on first access
LAZY = {"to_jax", "from_jax", "to_flax", "from_flax", "to_equinox", "from_equinox", "to_torch", "from_torch"}
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "equinox", "optax", "nirtorch")

ERRORS = {  # error class -> the builtin it also is
    "GraphError": ValueError,
    "ShapeError": ValueError,
    "ParameterError": ValueError,
    "UnknownNodeError": NotImplementedError,
    "UnsupportedError": NotImplementedError,
    "FileFormatError": ValueError,
    "DynamicsError": ValueError,
    "InputError": ValueError,
    "MissingDependencyError": ImportError,
    "NotFoundError": KeyError,
    "NonFiniteError": FloatingPointError,
}


def test_public_names_are_pinned():
    assert len(nb.__all__) == len(set(nb.__all__)), "a name appears twice in nirbridge.__all__"
    added, removed = set(nb.__all__) - PUBLIC, PUBLIC - set(nb.__all__)
    assert not added and not removed, f"public API changed: added {sorted(added)}, removed {sorted(removed)}"


def test_eager_names_resolve_without_a_framework():
    for name in sorted(PUBLIC - LAZY):
        assert getattr(nb, name) is not None, name
    assert set(dir(nb)) >= PUBLIC
    assert nb.errors.NirBridgeError is nb.NirBridgeError
    assert nb.load.__module__ == "nirbridge.io" and nb.Graph.__module__ == "nirbridge.graph"


def test_lazy_names_resolve_on_first_use():
    # each lazy name is the object of that name in its backend module (imports the framework)
    code = textwrap.dedent(f"""
        import importlib, nirbridge as nb
        for name in {sorted(LAZY)!r}:
            obj = getattr(nb, name)
            assert callable(obj), name
            assert obj.__module__.startswith("nirbridge.backends."), (name, obj.__module__)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_unknown_attribute_is_an_attribute_error():
    try:
        nb.not_a_name  # noqa: B018
    except AttributeError as e:
        assert "not_a_name" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_import_loads_no_framework():
    # also after loading, validating and simulating on the NumPy reference: still no framework
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import nirbridge as nb
        from nirbridge import examples
        g = nb.load(examples.path("lif_norse"))
        out = nb.simulate(g, np.ones((3, 1, 1), np.float32), nb.Dynamics(dt=1e-3), backend="reference")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
        print(loaded)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", f"import nirbridge imported {r.stdout.strip()}"


def test_error_hierarchy():
    assert set(errors.__all__) == {"NirBridgeError", "NirBridgeWarning", *ERRORS}
    for name, builtin in ERRORS.items():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.NirBridgeError) and issubclass(cls, builtin), name
    e = errors.node_error(errors.ShapeError, "lif1.lif", "tau", "has shape (3,)", "give shape (4,)")
    assert isinstance(e, ValueError) and str(e) == "node 'lif1.lif', field 'tau': has shape (3,). Fix: give shape (4,)"
