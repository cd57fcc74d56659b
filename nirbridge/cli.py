"""The ``nirbridge`` command: inspect, simulate, check and plot NIR graphs from a shell.

``nirbridge info FILE``, ``nirbridge simulate FILE ...``, ``nirbridge check FILE ...``,
``nirbridge plot FILE ...`` and ``nirbridge demo``; ``nirbridge COMMAND --help`` lists the options.
``python -m nirbridge`` is the same command. Exit codes: 0 success (``check``/``demo``: the
backends agree), 1 the backends disagree, 2 a usage, file or graph error, reported as one line
``nirbridge: error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backends import DEFAULT_BACKENDS
from .dynamics import (
    INPUT_GAINS,
    METHODS,
    OUTPUT_DELAYS,
    RECURRENT_STARTS,
    RESET_TIMINGS,
    RESETS,
    SPIKES,
    SURROGATES,
    SYNAPSES,
    THRESHOLDS,
    V_INITS,
    VOLTAGES,
    Dynamics,
)
from .errors import InputError, NirBridgeError, NirBridgeWarning

__all__ = ["main"]

#: the dynamics of ``nirbridge demo``: the Braille graph was exported by snnTorch (trained at dt = 1e-4),
#: so it means what snnTorch computes: the "snntorch" preset
DEMO_PRESET = "snntorch"


#: the Dynamics fields with a fixed set of values and a flag of their own (beyond --method ... --synapse)
_CHOICE_FLAGS = (
    ("--reset-timing", "reset_timing", RESET_TIMINGS, "same (default) or late (snnTorch's reset_delay=True)"),
    ("--voltage", "voltage", VOLTAGES, "the stored voltage: post (after the reset) or pre (before it)"),
    ("--spikes", "spikes", SPIKES, "single (default) or count (several spikes per step)"),
    ("--v-init", "v_init", V_INITS, "the initial voltage: zero (default), v_leak or v_reset"),
    ("--recurrent-start", "recurrent_start", RECURRENT_STARTS, "zero (default) or rest"),
    ("--input-gain", "input_gain", INPUT_GAINS, "nir (default: scaled by r, w_in) or unit (unscaled)"),
    ("--surrogate", "surrogate", SURROGATES, "the spike's surrogate derivative (gradients only)"),
)
#: every Dynamics field the command line sets directly
_FIELDS = ("method", "reset", "threshold", "synapse", "reset_timing", "voltage", "spikes", "v_init",
           "recurrent_start", "input_gain", "surrogate", "output_delay", "surrogate_slope")


class _Fail(Exception):
    """A usage error found by argparse, reported like every other error."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line with the same prefix for every subcommand, exit code 2
        raise _Fail(f"{message} (see: {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nirbridge`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except _Fail as e:
        print(f"nirbridge: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help / --version
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NirBridgeWarning)
            try:
                return int(args.func(args))
            finally:
                _print_warnings(caught)
    except (NirBridgeError, OSError) as e:
        msg = str(e).replace("\n", " ")
        print(f"nirbridge: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nirbridge: interrupted", file=sys.stderr)
        return 130


def _print_warnings(caught) -> None:
    """nirbridge's warnings as one ``nirbridge: warning: ...`` line each, the fix also as flags; others
    as Python shows them."""
    seen = set()
    for w in caught:
        if issubclass(w.category, NirBridgeWarning):
            line = f"nirbridge: warning: {_shell(str(w.message))}".replace("\n", " ")
            if line not in seen:
                seen.add(line)
                print(line, file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


# --------------------------------------------------------------------------------------- parser
def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="nirbridge", description="Run NIR spiking-network graphs in NumPy, JAX and PyTorch "
                "with the same numbers, and prove it.")
    p.add_argument("--version", action="version", version=f"nirbridge {__version__}")
    sub = p.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("info", help="summarise a .nir file: nodes, shapes, parameters",
                       description="Print the graph's nodes in execution order, shapes and parameter counts.")
    c.add_argument("file", help="a .nir file")
    c.set_defaults(func=_cmd_info)

    c = sub.add_parser("simulate", help="simulate a graph in one backend and save the traces (.npz)",
                       description="Simulate FILE and write its outputs (and recorded nodes) to an .npz file.")
    c.add_argument("file", help="a .nir file")
    _input_args(c, required=True)
    _dynamics_args(c)
    c.add_argument("--backend", default="reference", help="reference (default), jax or torch")
    c.add_argument("--out", required=True, help="the .npz file to write")
    c.add_argument("--record", nargs="+", default=None, metavar="NODE[:VAR]",
                   help="also save these node outputs / state variables (node:var), or 'all'")
    c.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    prog = c.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show a progress bar (default: on for 1000+ steps in a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    c.set_defaults(func=_cmd_simulate)

    c = _compare_parser(sub, "check", help="prove that backends compute the same numbers (exit 1 if not)",
                        description="Run FILE in several backends and compare every node output and state "
                        "variable at every step. Exit code 0: they agree; 1: they do not.")
    c.set_defaults(func=_cmd_check)

    c = _compare_parser(sub, "plot", help="spike rasters per backend side by side and voltage traces (PNG)",
                        description="Simulate FILE in several backends and draw a spike raster per backend "
                        "and the voltage of a few neurons in every backend (needs matplotlib).")
    c.add_argument("--out", required=True, help="the image file to write (.png)")
    c.add_argument("--sample", type=int, default=0, help="which batch row to draw (default 0)")
    c.add_argument("--neurons", type=int, default=3, help="how many voltage traces (default 3)")
    c.add_argument("--trace", default=None, metavar="NODE[:VAR]",
                   help="the state to draw as traces (default: v of the spiking node nearest the output)")
    c.set_defaults(func=_cmd_plot)

    c = sub.add_parser("export", help="rewrite a graph for another library's NIR importer (.nir)",
                       description="Read FILE with its Dynamics (--library / --preset / the flags) and write "
                       "a .nir file that the NIR importer of --to reproduces (nirbridge.presets.export_graph); "
                       "each change is printed as a warning, what the importer cannot express is an error.")
    c.add_argument("file", help="a .nir file")
    _dynamics_args(c)
    c.add_argument("--to", required=True, metavar="LIB",
                   help="the library whose importer reads the result: snntorch, norse, sinabs, spikingjelly, "
                        "spyx or rockpool")
    c.add_argument("--target-dt", type=float, default=None, metavar="DT",
                   help="the dt the importer is given (default: the importer's own)")
    c.add_argument("--out", required=True, help="the .nir file to write")
    c.set_defaults(func=_cmd_export)

    c = sub.add_parser("demo", help="simulate the shipped Braille graph in every backend, compare, time",
                       description="Load the Braille-reading SNN from the NIR paper (shipped with nirbridge), "
                       "simulate it in the reference, JAX and torch on seeded random spikes, print the "
                       "equivalence report and the speed of each backend. Exit 0 when they agree.")
    c.add_argument("--steps", type=int, default=256, help="time steps (default 256)")
    c.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    c.add_argument("--p", type=float, default=0.1, help="input spike probability (default 0.1)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    c.add_argument("--backends", default=None, metavar="B1,B2,...",
                   help="default: reference,jax,torch, skipping missing ones; backends named here must be installed")
    c.add_argument("--repeat", type=int, default=5, help="timed runs per backend (default 5)")
    c.set_defaults(func=_cmd_demo)
    return p


def _input_args(c: argparse.ArgumentParser, *, required: bool) -> None:
    g = c.add_mutually_exclusive_group(required=required)
    g.add_argument("--input", metavar="X.npy",
                   help="input array (T, B, *shape) in a .npy file, or an .npz with one array per graph input")
    g.add_argument("--random-spikes", metavar="T,B,p",
                   help="seeded Bernoulli(p) spikes of T steps, batch B" + ("" if required else
                                                                           " (default 200,4,0.1)"))
    c.add_argument("--seed", type=int, default=0, help="seed of --random-spikes (default 0)")


def _dynamics_args(c: argparse.ArgumentParser) -> None:
    g = c.add_argument_group("dynamics (how NIR's continuous equations are discretised; see the docs)")
    g.add_argument("--dt", type=float, default=None, help="time step in seconds (required unless --preset has one)")
    g.add_argument("--preset", default=None, help="a Dynamics preset, e.g. 'nir'; the options below override it")
    g.add_argument("--library", default=None, metavar="LIB",
                   help="read the file as LIB exported it: LIB's exporter corrections and preset "
                        "(nirbridge.presets.import_graph); e.g. --library norse --export-dt 1e-3")
    g.add_argument("--option", action="append", default=[], metavar="[NODE:]KEY=VALUE",
                   help="one of the library's own options (with --library or --preset), e.g. reset_mechanism=zero, "
                        "norm_input=false; NODE:KEY=VALUE for one node only; repeatable")
    g.add_argument("--export-dt", type=float, default=None,
                   help="--library norse: the dt given to norse.torch.to_nir (1e-3 if none was given)")
    g.add_argument("--method", choices=METHODS, default=None, help="euler (default) or exact")
    g.add_argument("--reset", choices=RESETS, default=None, help="zero (default) or subtract")
    g.add_argument("--threshold", choices=THRESHOLDS, default=None, help="'>' (default) or '>='")
    g.add_argument("--synapse", choices=SYNAPSES, default=None, help="CubaLIF order: simultaneous (default)")
    for flag, name, values, hlp in _CHOICE_FLAGS:
        g.add_argument(flag, dest=name, choices=values, default=None, help=hlp)
    g.add_argument("--output-delay", dest="output_delay", type=int, choices=OUTPUT_DELAYS, default=None,
                   help="0 (default) or 1 (Spyx: spikes reach the next node one step later)")
    g.add_argument("--surrogate-slope", dest="surrogate_slope", type=float, default=None,
                   help="the surrogate's slope (default 25)")
    g.add_argument("--by-type", dest="by_type", action="append", default=[], metavar="TYPE:KEY=VALUE",
                   help="a setting for one node type, e.g. CubaLIF:reset_timing=same; repeatable")
    g.add_argument("--by-node", dest="by_node", action="append", default=[], metavar="NODE:KEY=VALUE",
                   help="a setting for one node, e.g. lif1:reset=zero; repeatable")


def _compare_parser(sub: Any, name: str, *, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that runs FILE in several backends and compares them (``check``, ``plot``)."""
    c = sub.add_parser(name, help=help, description=description)
    c.add_argument("file", help="a .nir file")
    _input_args(c, required=False)
    _dynamics_args(c)
    c.add_argument("--backends", default=None, metavar="B1,B2,...",
                   help="backends to compare (default reference,jax,torch, skipping missing ones; "
                   "backends named here must be installed)")
    c.add_argument("--atol", type=float, default=None, help="absolute tolerance (default by dtype)")
    c.add_argument("--rtol", type=float, default=None, help="relative tolerance (default by dtype)")
    c.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    return c


# ---------------------------------------------------------------------------------- helpers
def _load(path: str):
    """A .nir file, or a shipped example by (a unique prefix of) its name, e.g. ``braille``."""
    from . import examples
    from .io import load

    if not Path(path).exists() and "/" not in path and not path.endswith((".nir", ".h5", ".hdf5")):
        hits = [n for n in examples.names() if n == path] or [n for n in examples.names() if n.startswith(path)]
        if len(hits) == 1:
            return load(str(examples.path(hits[0])))
        raise InputError(f"{path!r} is neither a file nor a shipped example"
                         + (f" (it starts {hits})" if hits else "")
                         + f". Fix: give a .nir file, or one of the examples {examples.names()}")
    return load(path)


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip()


def _pairs(items: list[str], flag: str, need_key: bool) -> tuple[dict, dict]:
    """``[NODE:]KEY=VALUE`` items as ({key: value}, {node: {key: value}})."""
    flat: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for item in items:
        head, eq, value = item.partition("=")
        node, colon, key = head.rpartition(":")
        if not eq or not key or (need_key and not colon):
            form = "NAME:KEY=VALUE" if need_key else "[NODE:]KEY=VALUE"
            raise InputError(f"{flag} {item!r} is not {form}. Fix: e.g. {flag} "
                             + ("lif1:reset=zero" if need_key else "reset_mechanism=zero"))
        if colon:
            per.setdefault(node, {})[key.strip()] = _value(value)
        else:
            flat[key.strip()] = _value(value)
    return flat, per


def _graph_and_dynamics(args: argparse.Namespace):
    """The graph of ``args.file`` and its Dynamics from the flags (``--library``: through
    ``import_graph``, the file's corrections included)."""
    from . import presets

    g = _load(args.file)
    if args.library is not None and args.preset is not None:
        raise InputError("--library and --preset both given. Fix: --library LIB reads the file as LIB wrote it "
                         "and uses LIB's preset; give one of them")
    opts, per_node = _pairs(args.option, "--option", need_key=False)
    if (opts or per_node) and args.library is None and args.preset is None:
        raise InputError("--option sets a library's own option: it needs --library LIB (or --preset LIB). "
                         "Fix: e.g. --library snntorch --option reset_mechanism=zero")
    if args.export_dt is not None and args.library is None:
        raise InputError("--export-dt is read by --library norse only. Fix: add --library norse")
    kw = _field_flags(args)
    if args.library is not None:
        try:
            return presets.import_graph(g, args.library, export_dt=args.export_dt, options=per_node or None,
                                        **opts, **kw)
        except NirBridgeError as e:
            raise type(e)(_shell(str(e))) from None
    if args.preset is not None:
        return g, presets.preset_dynamics(presets.get_preset(args.preset), {**kw, **opts}, per_node or None, g)
    if "dt" not in kw:
        raise InputError("--dt is required: NIR files store no time step. Fix: e.g. --dt 1e-4 (seconds), or "
                         "--library LIB for the file's library")
    return g, Dynamics(**kw)


def _field_flags(args: argparse.Namespace) -> dict:
    kw = {k: getattr(args, k) for k in _FIELDS if getattr(args, k, None) is not None}
    if args.dt is not None:
        kw["dt"] = args.dt
    for flag, attr in (("--by-type", "by_type"), ("--by-node", "by_node")):
        _, per = _pairs(getattr(args, attr), flag, need_key=True)
        if per:
            kw[attr] = {k: {f: (int(v) if f == "output_delay" else v) for f, v in d.items()} for k, d in per.items()}
    return kw


def _shell(text: str) -> str:
    """A message's Python fix also phrased as the flags that do it."""
    import re

    m = re.search(r"import_graph\(path, '(\w+)'(?:, export_dt=([\w.+-]+))?", text)
    if m:
        flags = f"--library {m.group(1)}" + (f" --export-dt {m.group(2)}" if m.group(2) else "")
        return f"{text} (shell: {flags})"
    m = re.search(r"Dynamics\.preset\('(\w+)', (\w+)=([^,)]+)\)", text)
    if m:
        value = m.group(3).strip("'\"")
        return f"{text} (shell: --library {m.group(1)} --option {m.group(2)}={value})"
    if "without import_graph" in text:
        return f"{text} (shell: --preset LIB instead of --library LIB)"
    return text


def _enable_float64(dtype: str, backends) -> None:
    """``--dtype float64`` with JAX: switch on JAX's 64-bit mode (this process is the CLI's own;
    the library itself never changes JAX's global configuration)."""
    import importlib.util

    if dtype == "float64" and "jax" in backends and importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_enable_x64", True)


def _out_path(path: str) -> Path:
    p = Path(path)
    if not p.parent.is_dir():
        raise InputError(f"--out {path!r}: the folder {str(p.parent)!r} does not exist. Fix: create it first")
    return p


def _parse_random(spec: str) -> tuple[int, int, float]:
    parts = spec.split(",")
    bad = InputError(f"--random-spikes {spec!r} is not T,B,p. Fix: e.g. --random-spikes 200,4,0.1")
    if len(parts) != 3:
        raise bad
    try:
        T, B, p = int(parts[0]), int(parts[1]), float(parts[2])
    except ValueError:
        raise bad from None
    return T, B, p


def _inputs(args: argparse.Namespace, graph) -> tuple[Any, str]:
    from .testing import random_spikes

    if args.input is not None:
        return _read_input(args.input, graph), f"input from {Path(args.input).name}"
    spec = args.random_spikes or "200,4,0.1"
    T, B, p = _parse_random(spec)
    return random_spikes(graph, T, B, p, seed=args.seed), f"random spikes T={T}, B={B}, p={p}, seed={args.seed}"


def _read_input(path: str, graph) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--input {path!r} is not a file. Fix: check the path")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and magic[:4] != b"PK\x03\x04":
        raise InputError(f"--input {p.name} is not a .npy or .npz file. Fix: save the input with numpy.save "
                         "(one array) or numpy.savez (one array per graph input)")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as e:  # not an .npy/.npz, truncated, pickled objects
        raise InputError(f"--input {p.name}: cannot read it as .npy/.npz ({type(e).__name__}: {e}). "
                         "Fix: save the array with numpy.save") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            arrays = {k: data[k] for k in data.files}
        if len(arrays) == 1 and len(graph.inputs) == 1:
            return next(iter(arrays.values()))
        return arrays
    return data


def _record(items: list[str] | None) -> Any:
    if not items:
        return None
    if items == ["all"]:
        return "all"
    return [tuple(r.rsplit(":", 1)) if ":" in r else r for r in items]


def _key_name(key: Any) -> str:
    return key if isinstance(key, str) else f"{key[0]}:{key[1]}"


def _backends(arg: str | None) -> tuple[tuple[str, ...], bool]:
    if arg is None:
        return DEFAULT_BACKENDS, False
    names = tuple(b.strip() for b in arg.split(",") if b.strip())
    if not names:
        raise InputError("--backends is empty. Fix: e.g. --backends reference,jax")
    return names, True


def _describe_input(x: Any) -> tuple[int, int]:
    first = next(iter(x.values())) if isinstance(x, dict) else x
    shape = np.shape(first)
    if len(shape) < 2:
        raise InputError(f"the input has shape {shape}; expected (T, B, *shape), time-major. "
                         "Fix: save the input with a time and a batch axis")
    return int(shape[0]), int(shape[1])


# --------------------------------------------------------------------------------- commands
def _cmd_info(args: argparse.Namespace) -> int:
    g = _load(args.file)
    from .compare import spiking_nodes

    print(f"{Path(args.file).name}")
    print(g.summary())
    plan = g.plan
    ins = ", ".join(f"{n} {tuple(plan[n].output_shape)}" for n in plan.inputs)
    outs = ", ".join(f"{n} {tuple(plan[n].output_shape)}" for n in plan.outputs)
    print(f"inputs: {ins}")
    print(f"outputs: {outs}")
    spiking = spiking_nodes(g)
    spk = [s.name for s in plan.steps if s.name in spiking and s.role == "compute"]
    print(f"spiking nodes: {', '.join(spk) or 'none'}")
    stateful = [f"{s.name} ({','.join(s.node.spec.state)})" for s in plan.steps if s.node.spec.stateful]
    print(f"state: {', '.join(stateful) or 'none'}")
    print("NIR stores no time step or discretisation: pass them as Dynamics (dt, method, reset, "
          "threshold, synapse) when you simulate.")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    out_path = _out_path(args.out)
    g, dyn = _graph_and_dynamics(args)
    x, what = _inputs(args, g)
    T, B = _describe_input(x)
    _enable_float64(args.dtype, [args.backend])
    progress = args.progress
    if progress is None:
        progress = T >= 1000 and sys.stderr.isatty()
    t0 = time.perf_counter()
    out = simulate(g, x, dyn, backend=args.backend, record=_record(args.record), dtype=args.dtype,
                   progress=progress)
    elapsed = time.perf_counter() - t0
    arrays = {_key_name(k): np.asarray(v) for k, v in out.items()}
    with open(out_path, "wb") as f:  # a file object: numpy must not append ".npz" to the name
        np.savez(f, **arrays)
    print(f"{Path(args.file).name}: {what}; {dyn!r}; backend {args.backend}, {args.dtype}")
    print(f"simulated {T} steps x batch {B} in {elapsed:.3f} s ({T / max(elapsed, 1e-12):.0f} steps/s, "
          "compilation included)")
    for k, v in arrays.items():
        print(f"  {k}: shape {v.shape}, mean {float(v.mean()):.6g}")
    print(f"wrote {out_path}")
    return 0


def _run_compare(args: argparse.Namespace):
    from .compare import compare

    g, dyn = _graph_and_dynamics(args)
    x, what = _inputs(args, g)
    backends, explicit = _backends(args.backends)
    _enable_float64(args.dtype, backends)
    report = compare(g, x, dyn, backends=backends, atol=args.atol, rtol=args.rtol, dtype=args.dtype,
                     require=explicit)
    return g, dyn, what, report


def _cmd_check(args: argparse.Namespace) -> int:
    g, dyn, what, report = _run_compare(args)
    print(f"{Path(args.file).name}: {what}; {dyn!r}")
    print(report)
    return 0 if report.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from . import presets
    from .io import save

    out_path = _out_path(args.out)
    g, dyn = _graph_and_dynamics(args)
    if args.to not in presets.IMPORTERS:
        raise InputError(f"--to {args.to!r}: no importer is known for it. Fix: one of {sorted(presets.IMPORTERS)}")
    try:
        out = presets.export_graph(g, dyn, args.to, dt=args.target_dt)
    except NirBridgeError as e:
        raise type(e)(_shell(str(e))) from None
    save(out, out_path)
    dt = args.target_dt if args.target_dt is not None else presets.IMPORTERS[args.to]["dynamics"]["dt"]
    print(f"{Path(args.file).name}: {dyn!r}")
    print(f"wrote {out_path} for {presets.IMPORTERS[args.to]['library']} at dt = {dt:g}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    _out_path(args.out)
    g, dyn, what, report = _run_compare(args)
    if not report.ran:
        raise InputError("no backend ran. Fix: install one, see the report:\n" + str(report))
    _plot(report, g, args.out, sample=args.sample, neurons=args.neurons, trace=args.trace,
                title=f"{Path(args.file).name}: {what}; {dyn!r}")
    print(report)
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import examples
    from .compare import compare
    from .testing import random_spikes

    g = _load(str(examples.path("braille_noDelay_bias_zero")))
    dyn = Dynamics.preset(DEMO_PRESET, reset_mechanism="subtract")  # the Braille net resets by subtraction
    x = random_spikes(g, args.steps, args.batch, args.p, seed=args.seed)
    backends, explicit = _backends(args.backends)
    _enable_float64(args.dtype, backends)
    print("nirbridge demo: the Braille-reading SNN of the NIR paper (exported by snnTorch)\n")
    print(g.summary())
    print(f"\ninput: seeded random spikes, T={args.steps}, B={args.batch}, p={args.p}, seed={args.seed}")
    print(f"dynamics: {dyn!r} (Dynamics.preset({DEMO_PRESET!r}): what snnTorch computes)\n")
    report = compare(g, x, dyn, backends=backends, dtype=args.dtype, require=explicit)
    print(report)
    print(f"\nspeed: {report.T} steps x batch {report.B}, outputs only; median of {args.repeat} runs after a "
          "first run (which includes tracing and compilation):")
    for b in report.ran:
        first, warm = _benchmark(b, g, dyn, x, args.dtype, args.repeat)
        print(f"  {b:<10} {report.T / warm:>10.0f} steps/s  ({warm * 1e3:8.1f} ms per run; first run "
              f"{first * 1e3:.1f} ms)")
    for b, why in report.unavailable.items():
        print(f"  {b:<10} unavailable: {why}")
    return 0 if report.ok else 1


def _benchmark(backend: str, graph, dyn: Dynamics, x: np.ndarray, dtype: str, repeat: int) -> tuple[float, float]:
    """(first run, median of ``repeat`` later runs) in seconds, outputs only.

    JAX and torch are timed through the objects users keep (a ``to_jax`` model, a ``to_torch``
    module), so tracing and compilation happen in the first run only; other backends through
    :func:`nirbridge.simulate`.
    """
    from .simulate import simulate

    if backend == "jax":
        import jax

        from .backends.jax import to_jax

        model = to_jax(graph, dyn, dtype=dtype)
        xj = jax.numpy.asarray(x)

        def run():
            jax.block_until_ready(model.run(model.params, xj))
    elif backend == "torch":
        import torch

        from .backends.torch import to_torch

        module = to_torch(graph, dyn, dtype=getattr(torch, dtype))
        xt = torch.from_numpy(np.ascontiguousarray(x))

        def run():
            with torch.no_grad():
                module(xt)
    else:
        def run():
            simulate(graph, x, dyn, backend=backend, dtype=dtype)
    times = []
    for _ in range(max(1, repeat) + 1):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return times[0], float(np.median(times[1:]))


# ------------------------------------------------------------------------------------- plotting
def _plot(report, graph, out: str, *, sample: int, neurons: int, trace: str | None, title: str) -> None:
    """Spike rasters of every spiking node, one panel per backend side by side, and below them the
    chosen state variable of a few neurons in every backend (one line style per backend)."""
    from .backends import require
    from .compare import spiking_nodes

    require("matplotlib", "cli")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    plan = graph.plan
    if not 0 <= sample < report.B:
        raise InputError(f"--sample {sample} is not a batch row of B={report.B}. Fix: 0 <= sample < {report.B}")
    spk = [s.name for s in plan.steps if s.role == "compute" and s.name in spiking_nodes(graph)]
    trace_key = _trace_key(plan, spk, trace)
    backends = report.ran
    fig = plt.figure(figsize=(4.2 * len(backends) + 1.0, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, len(backends), height_ratios=(3, 2))
    T = report.T
    for j, b in enumerate(backends):
        ax = fig.add_subplot(grid[0, j])
        res, offset, ticks = report.results[b], 0, []
        for k, name in enumerate(spk):
            z = np.asarray(res[name])[:, sample].reshape(T, -1)
            t_idx, n_idx = np.nonzero(z > 0)
            ax.scatter(t_idx, n_idx + offset, s=4, marker="|", color=f"C{k}", linewidths=0.8)
            ticks.append((offset + z.shape[1] / 2, name))
            offset += z.shape[1]
            ax.axhline(offset - 0.5, color="0.85", lw=0.5)
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_ylim(max(offset, 1) - 0.5, -0.5)  # the first node in plan order on top
        ax.set_yticks([t for t, _ in ticks], [n for _, n in ticks] if j == 0 else [""] * len(ticks), fontsize=7)
        status = "baseline" if b == report.baseline else ("agrees" if report.comparisons[b].ok else "DIFFERS")
        n_spikes = sum(int(np.count_nonzero(np.asarray(res[n])[:, sample])) for n in spk)
        ax.set_title(f"{b} ({status}): {n_spikes} spikes", fontsize=9)
        ax.set_xlabel("time step")
    ax = fig.add_subplot(grid[1, :])
    if trace_key is None:
        ax.text(0.5, 0.5, "no state variable to draw (the graph has no stateful node)", ha="center",
                transform=ax.transAxes)
        ax.set_axis_off()
    else:
        styles = ["-", "--", ":", "-."]
        base = np.asarray(report.results[report.baseline][trace_key])[:, sample].reshape(T, -1)
        picks = _pick_neurons(report, trace_key[0], base, sample, neurons)
        for j, b in enumerate(backends):
            v = np.asarray(report.results[b][trace_key])[:, sample].reshape(T, -1)
            for k, n in enumerate(picks):
                ax.plot(np.arange(T), v[:, n], styles[j % len(styles)], color=f"C{k}", lw=1.3 if j == 0 else 1.0,
                        label=f"{b}, neuron {n}")
        thr = plan[trace_key[0]].node.params.get("v_threshold") if trace_key[1] == "v" else None
        if thr is not None:
            ax.axhline(float(np.asarray(thr).reshape(-1)[picks[0]]), color="0.5", lw=0.8, ls=(0, (1, 3)),
                       label="threshold")
        ax.set_xlim(-0.5, T - 0.5)
        ax.set_xlabel("time step")
        ax.set_ylabel(_key_name(trace_key))
        ax.legend(fontsize=7, ncol=len(backends), loc="lower left", framealpha=0.8)
        ax.set_title(f"{_key_name(trace_key)} of the {len(picks)} most active neurons, sample {sample}, "
                     "every backend (one line style each)", fontsize=9)
    fig.suptitle(title.replace("; Dynamics", "\nDynamics"), fontsize=9)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _pick_neurons(report, node: str, base: np.ndarray, sample: int, count: int) -> list[int]:
    """The ``count`` neurons of ``node`` that spike most in the baseline (else vary most)."""
    out = np.asarray(report.results[report.baseline].get(node, np.zeros(0)))
    if out.size and out.shape[0] == base.shape[0]:
        activity = out[:, sample].reshape(base.shape[0], -1).sum(axis=0)
    else:
        activity = base.std(axis=0)
    order = np.argsort(-activity, kind="stable")
    return sorted(int(i) for i in order[: max(1, min(count, base.shape[1]))])


def _trace_key(plan, spiking: list[str], trace: str | None):
    if trace is not None:
        node, _, var = trace.partition(":")
        if node not in plan:
            raise InputError(f"--trace {trace!r}: no node {node!r}. Fix: nodes are {list(plan.names)}")
        state = plan[node].node.spec.state
        if not var:
            var = "v" if "v" in state else (state[0] if state else "")
        if var not in state:
            raise InputError(f"--trace {trace!r}: node {node!r} ({plan[node].node.type}) has no state {var!r}; "
                             f"it has {list(state)}. Fix: trace one of those, or another node")
        return (node, var)
    for name in spiking[::-1] + [s.name for s in plan.steps]:  # the spiking node nearest the output first
        if "v" in plan[name].node.spec.state:
            return (name, "v")
    return None
