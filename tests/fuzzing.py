"""Structure-aware fuzzing of nirbridge's loaders: case specs, the worker that runs them, the verdicts.

A *case* is a small JSON-able dict drawn by the hypothesis strategies below:

* ``file``: a valid graph (one node of each type, a nested graph, or a shipped example) written
  with ``nir.write``, then edited with h5py: fields deleted or replaced by values of odd dtypes and
  shapes (NaN, inf, huge, 0-d, strings, non-UTF-8 bytes), hard links making groups a DAG or a
  cycle, soft and external links, metadata nested deep, huge datasets never written;
* ``bytes``: a shipped example with bytes flipped, set, cut or repeated;
* ``memory``: a ``nir.NIRGraph`` built in memory with one field of one node replaced by an odd
  value (a torch tensor, a list, a Python number, None, a string, NaN, a huge or 0-d shape).

:func:`run_batch` runs many cases in one worker subprocess (``python tests/fuzzing.py``) under a
2 GiB address-space limit, with a deadline per case; a worker that dies or goes silent is
replaced and the case counted. Each case ends in exactly one verdict:

* ``named``: a NirBridgeError whose message names a node or a field (or the file, for a file that
  is not HDF5 at all);
* ``ok``: it loaded, and save -> load gives back the same graph bit for bit, and a short
  simulation on the reference backend either runs or raises a NirBridgeError;
* failures: ``hang``, ``abort`` (the worker died), ``memory`` (MemoryError under the limit),
  ``bare`` (an exception that is no NirBridgeError), ``unnamed`` (a NirBridgeError naming nothing),
  ``silent_bad`` (loaded, then a bare error in plan or simulate), ``not_bitexact``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FAILURES = ("hang", "abort", "memory", "bare", "unnamed", "silent_bad", "not_bitexact")
HERE = Path(__file__).resolve().parent
NODE_TYPES = ("Affine", "Linear", "Scale", "Threshold", "Flatten", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
              "Delay", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
EXAMPLES = ("braille_noDelay_bias_zero", "cnn_sinabs", "lif_norse", "two_lif_neurons")
DTYPES = ("float16", "float32", "float64", ">f8", "int8", "int64", "uint8", "bool", "complex64", "str", "bytes")
FILLS = ("zero", "one", "rand", "nan", "inf", "-inf", "huge", "neg", "tiny")
TEXTS = ("", "LIF", "NIRGraph", "Spiky", "x/y", ".", "é", "\udcff")
LIMIT_AS = 2 << 30


# ---------------------------------------------------------------------- strategies (hypothesis)
def strategies():
    """``case``: a hypothesis strategy of case specs (imported lazily: the worker needs no hypothesis)."""
    from hypothesis import strategies as st

    dims = st.lists(st.integers(0, 6), min_size=0, max_size=4) | st.sampled_from(
        [[2**31], [2**32, 2**32], [4096, 4096], [1 << 26], []])
    value = st.fixed_dictionaries({"dtype": st.sampled_from(DTYPES), "shape": dims, "fill": st.sampled_from(FILLS)})
    text = st.fixed_dictionaries({"text": st.sampled_from(TEXTS), "raw": st.booleans()})
    target = st.integers(0, 10**6)
    op = st.one_of(
        st.fixed_dictionaries({"op": st.just("del"), "t": target}),
        st.fixed_dictionaries({"op": st.just("set"), "t": target, "v": value | text}),
        st.fixed_dictionaries({"op": st.just("hardlink"), "t": target, "u": target}),
        st.fixed_dictionaries({"op": st.just("ancestor"), "t": target}),
        st.fixed_dictionaries({"op": st.just("softlink"), "t": target}),
        st.fixed_dictionaries({"op": st.just("extlink"), "t": target}),
        st.fixed_dictionaries({"op": st.just("deepmeta"), "t": target, "depth": st.sampled_from([3, 70, 500])}),
        st.fixed_dictionaries({"op": st.just("unwritten"), "t": target, "n": st.integers(1, 60)}),
        st.fixed_dictionaries({"op": st.just("rename"), "t": target, "name": st.sampled_from(TEXTS[1:5] + ("a b",))}),
        st.fixed_dictionaries({"op": st.just("edge"), "t": target, "a": st.sampled_from(TEXTS), "b": target}),
    )
    base = st.sampled_from(NODE_TYPES + ("nested", "deep") + EXAMPLES)
    file_case = st.fixed_dictionaries({"kind": st.just("file"), "base": base,
                                       "ops": st.lists(op, min_size=1, max_size=3)})
    byte_op = st.tuples(st.sampled_from(["flip", "set", "cut", "dup"]), st.floats(0, 1), st.integers(0, 255))
    bytes_case = st.fixed_dictionaries({"kind": st.just("bytes"), "base": st.sampled_from(EXAMPLES),
                                        "ops": st.lists(byte_op, min_size=1, max_size=4)})
    specials = ["torch", "torch_f16", "torch_bf16", "list", "pyfloat", "pyint", "none", "nested_list", "ragged",
                "huge_int"]
    odd = st.one_of(value, text, st.fixed_dictionaries({"special": st.sampled_from(specials)}))
    memory_case = st.fixed_dictionaries({"kind": st.just("memory"), "base": st.sampled_from(NODE_TYPES),
                                         "t": target, "v": odd})
    return st.one_of(file_case, bytes_case, memory_case)


def draw_cases(n: int, seed: int) -> list[dict]:
    """``n`` case specs drawn from :func:`strategies` with a fixed seed (generation only: no
    shrinking, no example database), the same list for the same seed."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    drawn: list[dict] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategies())
    def collect(case):
        drawn.append(case)

    collect()
    return drawn


# ---------------------------------------------------------------------- building the cases (worker)
def _value(spec: dict) -> Any:
    import numpy as np

    if "text" in spec:
        t = spec["text"]
        return t.encode("utf8", "surrogateescape") if spec.get("raw") else t
    shape = tuple(spec["shape"])
    n = 1
    for d in shape:
        n *= d
    if n > 1 << 16:  # a huge shape is declared, never filled: an unwritten chunked dataset
        return ("unwritten", shape, spec["dtype"] if spec["dtype"] not in ("str", "bytes") else "float32")
    dt = spec["dtype"]
    if dt == "str":
        return np.array(["a"] * n, dtype=object).reshape(shape) if shape else "a"
    if dt == "bytes":
        return np.array([b"\xff\xfe"] * n).reshape(shape)
    fills = {"zero": 0.0, "one": 1.0, "nan": float("nan"), "inf": float("inf"), "-inf": -float("inf"),
             "huge": 1e300, "neg": -1.0, "tiny": 1e-300}
    rng = np.random.default_rng(n)
    with np.errstate(all="ignore"):
        base = rng.normal(size=shape) if spec["fill"] == "rand" else np.full(shape, fills[spec["fill"]])
        if np.dtype(dt).kind in "iub":
            base = np.nan_to_num(base, nan=0, posinf=2**62, neginf=-(2**62))
            base = np.clip(base, np.iinfo(np.int64).min, np.iinfo(np.int64).max)
        return np.asarray(base.astype(dt))


def _base_graph(base: str):
    import nir
    import numpy as np

    from nirbridge import examples

    if base in EXAMPLES:
        return nir.read(examples.path(base), type_check=False)
    if base in ("nested", "deep"):
        f = lambda v: np.full(3, v, np.float32)  # noqa: E731
        g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}),
                                "lif": nir.LIF(tau=f(0.01), r=f(1), v_leak=f(0), v_threshold=f(1), v_reset=f(0)),
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "lif"), ("lif", "output")], type_check=False)
        for _ in range(1 if base == "nested" else 40):
            g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "sub": g,
                                    "output": nir.Output(output_type={"output": np.array([3])})},
                             edges=[("input", "sub"), ("sub", "output")], type_check=False)
        return g
    sys.path.insert(0, str(HERE))
    from cases import node_case

    return node_case(base, T=2, B=1)[0].to_nir()


def _write(graph, path: Path) -> None:
    import nirbridge as nb

    nb.save(nb.Graph.from_nir(graph), path)


def _objects(f) -> tuple[list[str], list[str]]:
    """(groups, datasets) of an open h5py file, by path, in a fixed order."""
    import h5py

    groups, datasets = [], []
    f.visititems(lambda name, obj: (groups if isinstance(obj, h5py.Group) else datasets).append(name))
    return groups, datasets


def _put(f, path: str, v: Any) -> None:
    import h5py
    import numpy as np

    if path in f:
        del f[path]
    if isinstance(v, tuple) and v and v[0] == "unwritten":
        f.create_dataset(path, shape=v[1], dtype=v[2], chunks=True, compression="gzip")
    elif isinstance(v, str):
        f.create_dataset(path, data=v, dtype=h5py.string_dtype())
    elif isinstance(v, np.ndarray) and v.dtype == object:
        f.create_dataset(path, data=v, dtype=h5py.string_dtype())
    else:
        f.create_dataset(path, data=v)


def _file_case(case: dict, path: Path) -> None:
    import h5py
    import numpy as np

    _write(_base_graph(case["base"]), path)
    with h5py.File(path, "r+") as f:
        for op in case["ops"]:
            groups, datasets = _objects(f)
            kind = op["op"]
            ds = datasets[op["t"] % len(datasets)] if datasets else None
            gr = groups[op["t"] % len(groups)] if groups else "node"
            try:
                if kind == "del" and ds:
                    del f[ds]
                elif kind == "set" and ds:
                    _put(f, ds, _value(op["v"]))
                elif kind == "hardlink" and len(groups) > 1:
                    other = groups[op["u"] % len(groups)]
                    f[f"{gr}/linked{op['u'] % 7}"] = f[other]
                elif kind == "ancestor":
                    f[f"{gr}/up"] = f[gr.rsplit("/", 1)[0] if "/" in gr else "/"]
                elif kind == "softlink" and ds:
                    f[f"{gr}/soft"] = h5py.SoftLink("/" + ds)
                elif kind == "extlink":
                    f[f"{gr}/ext"] = h5py.ExternalLink("elsewhere.h5", "/node")
                elif kind == "deepmeta":
                    g = f[gr].require_group("metadata")
                    for _ in range(op["depth"]):
                        g = g.create_group("m")
                elif kind == "unwritten":
                    for i in range(op["n"]):
                        f.create_dataset(f"{gr}/big{i}", shape=(4096, 4096), dtype="f4", chunks=(256, 256),
                                         compression="gzip")
                elif kind == "rename" and ds:
                    name = op["name"]
                    if "/" not in name and name != ".":
                        f.move(ds, ds.rsplit("/", 1)[0] + "/" + name) if "/" in ds else None
                elif kind == "edge":
                    edges = [p for p in datasets if p.endswith("edges")]
                    if edges:
                        e = edges[op["b"] % len(edges)]
                        a = op["a"].encode("utf8", "surrogateescape")
                        _put(f, e, np.array([[a, b"\xff\xfe"]], dtype=object))
            except (ValueError, KeyError, RuntimeError, TypeError, OSError):
                pass  # h5py refused this edit (e.g. a name taken): the case tests the edits that took


def _bytes_case(case: dict, path: Path) -> None:
    from nirbridge import examples

    data = bytearray(Path(examples.path(case["base"])).read_bytes())
    for kind, frac, b in case["ops"]:
        i = min(int(frac * len(data)), len(data) - 1)
        if kind == "flip":
            data[i] ^= 1 << (b % 8)
        elif kind == "set":
            data[i] = b
        elif kind == "cut":
            data = data[: max(i, 8)]
        elif kind == "dup":
            data[i:i] = data[i : i + 1 + b]
    path.write_bytes(bytes(data))


def _odd(spec: dict) -> Any:
    import numpy as np

    sp = spec.get("special")
    if sp is None:
        v = _value(spec)
        return np.zeros(2, np.float32) if isinstance(v, tuple) else v
    if sp.startswith("torch"):
        import torch

        dt = {"torch": torch.float32, "torch_f16": torch.float16, "torch_bf16": torch.bfloat16}[sp]
        return torch.ones(3, dtype=dt)
    return {"list": [1.0, 2.0, 3.0], "pyfloat": 2.0, "pyint": 3, "none": None, "nested_list": [[1.0], [2.0]],
            "ragged": [[1.0], [2.0, 3.0]], "huge_int": 10**30}[sp]


def _memory_graph(case: dict):
    g = _base_graph(case["base"])
    node = g.nodes["node"]
    import nirbridge as nb

    fields = nb.nodes.get_spec(case["base"]).fields
    field = fields[case["t"] % len(fields)]
    setattr(node, field, _odd(case["v"]))
    return g


# ---------------------------------------------------------------------- verdicts (worker)
def _names_something(msg: str, fname: str) -> bool:
    """The message names a node or a field; only a file HDF5 cannot open at all, or one without a
    graph, is named by the file alone."""
    if "node '" in msg or "field '" in msg:
        return True
    return fname in msg and ("not a readable HDF5 file" in msg or "no 'node' group" in msg)


def _simulate_ok(g) -> str | None:
    """None, or the verdict of a short reference simulation of a loaded graph."""
    import numpy as np

    import nirbridge as nb

    shape = g.input_shape(g.inputs[0]) if len(g.inputs) == 1 else None
    if shape is None or int(np.prod(shape)) > 1 << 16:
        return None
    try:
        with np.errstate(all="ignore"):
            nb.simulate(g, np.ones((2, 1) + tuple(shape), np.float32), nb.Dynamics(dt=1e-3))
    except nb.NirBridgeError:
        return None
    except MemoryError:
        return "memory"
    except Exception:
        return "silent_bad"
    return None


def run_case(case: dict, tmp: Path) -> tuple[str, str]:
    """``(verdict, detail)`` for one case (run in the worker)."""
    import warnings

    import nirbridge as nb

    warnings.simplefilter("ignore")  # repairs, overflow in odd values: the verdict is what counts
    path = tmp / "case.nir"
    for p in tmp.iterdir():
        p.unlink()
    if case["kind"] == "sleep":  # the harness's own check: a case that never answers
        time.sleep(3600)
    if case["kind"] == "abort":  # ... and one that kills its worker
        os.abort()
    try:
        if case["kind"] == "memory":
            try:
                raw = _memory_graph(case)
            except Exception as e:  # nir refused to build the mutated node itself: not our code
                return "named", f"(nir: {type(e).__name__})"
            g = nb.Graph.from_nir(raw)
        else:
            (_file_case if case["kind"] == "file" else _bytes_case)(case, path)
            g = nb.load(path, timeout=10.0, max_bytes=1 << 28)
    except nb.NirBridgeError as e:
        msg = str(e)
        return ("named" if _names_something(msg, path.name) else "unnamed"), f"{type(e).__name__}: {msg[:200]}"
    except MemoryError:
        return "memory", "MemoryError"
    except RecursionError as e:
        return "bare", f"RecursionError: {str(e)[:200]}"
    except Exception as e:
        return "bare", f"{type(e).__name__}: {str(e)[:200]}"
    try:
        g.plan  # noqa: B018
        p1, p2 = tmp / "a.nir", tmp / "b.nir"
        try:
            nb.save(g, p1)
        except nb.NirBridgeError as e:  # a value a NIR file cannot store, named
            msg = str(e)
            return ("named" if _names_something(msg, p1.name) else "unnamed"), f"save: {msg[:200]}"
        g1 = nb.load(p1)
        nb.save(g1, p2)
        g2 = nb.load(p2)
        if not g1.equals(g2) or (case["kind"] != "memory" and not g.equals(g1)):
            return "not_bitexact", "save -> load differs"
        bad = _simulate_ok(g1)
        if bad:
            return bad, "simulate"
    except MemoryError:
        return "memory", "MemoryError after load"
    except Exception as e:
        return "silent_bad", f"{type(e).__name__}: {str(e)[:200]}"
    return "ok", ""


def _worker() -> None:
    """Read one JSON case per line from stdin, answer one JSON verdict per line on stdout."""
    import resource
    import tempfile

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))
    import nirbridge  # noqa: F401  (imported before the first deadline starts)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(json.dumps(["ready", ""]), flush=True)
        for line in sys.stdin:
            case = json.loads(line)
            try:
                verdict = run_case(case, tmp)
            except MemoryError:
                verdict = ("memory", "MemoryError")
            print(json.dumps(list(verdict)), flush=True)


# ---------------------------------------------------------------------- the driver (test process)
def run_batch(cases: list[dict], deadline: float = 30.0) -> list[tuple[str, str]]:
    """Run ``cases`` in worker subprocesses; one ``(verdict, detail)`` per case, in order."""
    out: list[tuple[str, str]] = []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    i = 0
    while i < len(cases):
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)
        try:
            if _answer(proc, 120.0) in (None, _EOF):
                raise RuntimeError("the fuzz worker did not start")
            while i < len(cases):
                proc.stdin.write(json.dumps(cases[i]) + "\n")
                proc.stdin.flush()
                ans = _answer(proc, deadline)
                if ans is None or ans == _EOF:  # silent past the deadline, or the worker died
                    out.append(("hang" if ans is None else "abort", json.dumps(cases[i])[:300]))
                    i += 1
                    break
                out.append(tuple(ans))
                i += 1
        except BrokenPipeError:
            out.append(("abort", json.dumps(cases[i])[:300]))
            i += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:  # a pipe to a dead worker
                    pass
    return out


_EOF = ["eof", ""]


def _answer(proc: subprocess.Popen, deadline: float) -> list | None:
    """The worker's next answer; ``_EOF`` when it died, None when it said nothing in time."""
    end = time.monotonic() + deadline
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            return json.loads(line) if line else _EOF


def tally(verdicts: list[tuple[str, str]]) -> dict[str, int]:
    counts = {k: 0 for k in ("named", "ok", *FAILURES)}
    for v, _ in verdicts:
        counts[v] = counts.get(v, 0) + 1
    return counts


if __name__ == "__main__":
    _worker()
