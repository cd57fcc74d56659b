"""The documentation: the generated support table is current, the site builds in strict mode, and
the Python code on the pages runs and prints what the pages say it prints."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_support_table", DOCS / "gen_support_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_support_table_is_generated_from_the_registry():
    gen = _generator()
    page = (DOCS / "support.md").read_text(encoding="utf8")
    assert gen.replace_table(page, gen.render()) == page, "run: python docs/gen_support_table.py"
    from nirbridge.nodes import NODE_SPECS

    table = gen.render()
    for t in NODE_SPECS:  # one row per registered node type
        assert f"| `{t}` |" in table
    assert table.count("\n") == len(NODE_SPECS) + 1


def test_support_table_notices_a_new_node_type(monkeypatch):
    import nir

    from nirbridge.nodes import NODE_SPECS, NodeSpec

    gen = _generator()
    monkeypatch.setitem(NODE_SPECS, "Fancy", NodeSpec(type="Fancy", nir_class=nir.Scale, fields=("scale",)))
    row = [ln for ln in gen.render().splitlines() if ln.startswith("| `Fancy`")]
    assert row == ["| `Fancy` | `scale` | - | values | no | no | no | - |"]  # a spec but no kernel
    page = (DOCS / "support.md").read_text(encoding="utf8")
    assert gen.replace_table(page, gen.render()) != page


def test_mkdocs_strict_build(tmp_path):
    pytest.importorskip("mkdocs")
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "site" / "cli" / "index.html").is_file()
    assert (tmp_path / "site" / "img" / "raster.png").is_file()
    assert not (tmp_path / "site" / "gen_support_table.py").exists()


def test_docs_image_is_a_png_from_nirbridge_plot():
    data = (DOCS / "img" / "raster.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


# ------------------------------------------------------------------------------ code on the pages
#: page -> modules its code needs
PAGES = {
    "index.md": ["jax", "torch"],
    "concepts/graph.md": [],
    "tutorials/snntorch-to-jax.md": ["jax", "torch", "snntorch"],
    "tutorials/spyx-to-torch.md": ["jax", "torch", "spyx"],
    "tutorials/equivalence-ci.md": ["jax", "torch"],
    "tutorials/training.md": ["jax", "torch", "optax"],
    "library-developers.md": ["torch"],
}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_FLOAT = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")


def _blocks(page: str) -> list[tuple[str, str, str | None]]:
    """(language, code, the text block right after it or None) for every python block."""
    found = _FENCE.findall(page)
    out = []
    for i, (lang, body) in enumerate(found):
        if lang == "python":
            nxt = found[i + 1] if i + 1 < len(found) else None
            out.append((lang, body, nxt[1] if nxt and nxt[0] == "text" else None))
    return out


def _normal(line: str) -> str:
    # floats to 4 significant digits: a page's printed loss must not depend on the last bits of
    # the machine's floating-point kernels
    return _FLOAT.sub(lambda m: f"{float(m.group()):.4g}", line.strip())


# Runs the python blocks of every page in one fresh interpreter, as a reader would (not under this
# suite's strict JAX dtype promotion), each page in its own namespace and folder (pages write
# files), and prints {page: [stdout of each block] or {"error": traceback}} as JSON. One
# interpreter for all pages: importing jax and torch once keeps the test short.
_DRIVER = """
import contextlib, io, json, os, sys, traceback
pages = json.load(sys.stdin)
result = {}
for k, (page, blocks) in enumerate(pages.items()):
    os.makedirs(str(k))
    os.chdir(str(k))
    ns, outs = {"__name__": "__docs__"}, []
    try:
        for i, code in enumerate(blocks):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                exec(compile(code, f"{page} (python block {i + 1})", "exec"), ns)
            outs.append(buf.getvalue())
        result[page] = outs
    except BaseException:
        result[page] = {"error": traceback.format_exc()}
    os.chdir("..")
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    import json

    runnable = {page: [code for _, code, _ in _blocks((DOCS / page).read_text(encoding="utf8"))]
                for page, mods in PAGES.items() if all(importlib.util.find_spec(m) for m in mods)}
    # warnings are errors, except this one: snnTorch 1.0's exporter calls a deprecated nirtorch function
    cmd = [sys.executable, "-W", "error", "-W", "ignore:nirtorch.extract_nir_graph is being deprecated",
           "-c", _DRIVER]
    p = subprocess.run(cmd, input=json.dumps(runnable), capture_output=True, text=True,
                       cwd=tmp_path_factory.mktemp("pages"), timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_code_runs_and_prints_what_the_page_shows(page, page_runs):
    missing = [m for m in PAGES[page] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the page's code needs {missing}")
    run = page_runs[page]
    assert not isinstance(run, dict), f"{page}: its code raised\n{run['error']}"
    blocks = _blocks((DOCS / page).read_text(encoding="utf8"))
    for (_, _, shown), printed in zip(blocks, run):
        if shown is not None and printed:
            got = [_normal(ln) for ln in printed.splitlines()]
            for line in shown.splitlines():
                if line.strip() and line.strip() != "...":
                    assert _normal(line) in got, f"{page}: shown {line!r} but printed:\n{printed}"


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path):
    """The README's Python quickstart runs as written (in a fresh interpreter, in an empty folder)
    and ends with the round trip it claims: from_torch(module).equals(g) is True."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python block"
    code = blocks[0] + "\nassert report.ok\nassert nb.from_torch(module).equals(g)\nprint('QUICKSTART OK')\n"
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "QUICKSTART OK" in p.stdout
    assert (tmp_path / "out.nir").is_file()
