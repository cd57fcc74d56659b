"""The node registry: one spec per NIR node type.

A :class:`NodeSpec` knows a node type's parameters (the fields of the ``nir`` class, in order),
which of them are floating-point arrays that must be finite, its state variables, and its shape
rule (input shape and output shape, without batch or time dimensions). Every other part of
nirbridge looks node types up here; nothing dispatches on an if/elif chain of type names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import nir
import numpy as np

from .errors import ParameterError, ShapeError, UnknownNodeError, UnsupportedError, node_error
from .limits import MAX_DIM, check_delay_steps, check_geometry, check_shape  # noqa: F401 (kernels use check_delay_steps)

__all__ = ["NodeSpec", "NODE_SPECS", "PARAM_KINDS", "check_params", "get_spec", "register_node", "spec_for_nir"]

Shape = tuple[int, ...]

#: What each float parameter of a node is, as :attr:`NodeSpec.param_kinds` says (training filters,
#: validity checks and the torch parameters/buffers ask it):
#: ``"weight"`` (connection weights and biases, scales: what training usually changes),
#: ``"time_constant"`` (seconds, > 0), ``"gain"`` (``r``, ``w_in``), ``"voltage"`` (``v_leak``,
#: ``v_reset``), ``"threshold"`` (``v_threshold``, a Threshold's ``threshold``) and
#: ``"structure"`` (fixed when a program is built: a Delay's ``delay``, turned into whole steps).
PARAM_KINDS = ("weight", "time_constant", "gain", "voltage", "threshold", "structure")
_NEURON_KINDS = {"tau": "time_constant", "tau_mem": "time_constant", "tau_syn": "time_constant", "r": "gain",
                 "w_in": "gain", "v_leak": "voltage", "v_reset": "voltage", "v_threshold": "threshold"}


@dataclass(frozen=True)
class NodeSpec:
    """What nirbridge knows about one NIR node type.

    Attributes:
        type: the NIR class name (``"LIF"``); also the key in :data:`NODE_SPECS`.
        nir_class: the ``nir`` class, built with keyword arguments only.
        fields: constructor fields of ``nir_class`` that hold the node's parameters.
        float_params: fields that are floating-point arrays (checked finite).
        state: names of the state variables the node carries between time steps.
        spiking: whether the node's output is a spike train (0 or 1 per step).
        expected_input: params -> the input shape the parameters fix, or None if any shape fits.
        output_shape: (params, input shape) -> output shape; raises ShapeError for a bad input.
        equation: the continuous-time equation, for docs and summaries.
    """

    type: str
    nir_class: type
    fields: tuple[str, ...]
    float_params: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    spiking: bool = False
    expected_input: Callable[[str, Mapping[str, Any]], Shape | None] = field(
        default=lambda name, p: None
    )
    output_shape: Callable[[str, Mapping[str, Any], Shape], Shape] = field(
        default=lambda name, p, s: s
    )
    equation: str = ""
    param_kinds: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        kinds = dict(self.param_kinds)
        unknown = {f: k for f, k in kinds.items() if k not in PARAM_KINDS}
        if unknown or set(kinds) - set(self.float_params):
            raise node_error(ParameterError, self.type, "param_kinds",
                             f"{unknown or sorted(set(kinds) - set(self.float_params))} are not kinds of float "
                             "parameters",
                             f"map float parameters to kinds in {PARAM_KINDS}")
        object.__setattr__(self, "param_kinds", MappingProxyType(
            {f: kinds.get(f, "weight") for f in self.float_params}))

    @property
    def stateful(self) -> bool:
        """Whether the node carries state between time steps (a neuron, a Delay)."""
        return bool(self.state)

    def params_of_kind(self, *kinds: str) -> tuple[str, ...]:
        """The float parameters of these kinds (see :data:`PARAM_KINDS`), in field order."""
        return tuple(f for f in self.float_params if self.param_kinds[f] in kinds)

    @property
    def time_constants(self) -> tuple[str, ...]:
        """The float parameters that are time constants (in seconds, > 0)."""
        return self.params_of_kind("time_constant")

    @property
    def trainable(self) -> tuple[str, ...]:
        """The float parameters a backend exposes as trainable (every kind but ``"structure"``)."""
        return tuple(f for f in self.float_params if self.param_kinds[f] != "structure")


def _shape(a: Any) -> Shape:
    return tuple(int(d) for d in np.shape(a))


def _same_shape(*names: str):
    """Shape rule of element-wise nodes: all listed parameters share one shape, the I/O shape."""

    def expected(node: str, p: Mapping[str, Any]) -> Shape:
        ref = _shape(p[names[0]])
        for n in names[1:]:
            if p.get(n) is not None and _shape(p[n]) != ref:
                raise node_error(
                    ShapeError,
                    node,
                    n,
                    f"shape {_shape(p[n])} differs from {names[0]!r} shape {ref}",
                    f"give every one of {list(names)} the same shape (one value per neuron)",
                )
        return ref

    return expected


def _ints(node: str, field: str, v: Any) -> tuple[int, ...]:
    """The whole numbers in ``v`` (an int, a NumPy integer scalar or array, a sequence of ints).

    Floats are accepted only where they hold whole numbers (some exporters write ``2.0``); anything
    else (a string, ``None``, ``2.5``, a bool) is a :class:`ParameterError` naming node and field.
    """
    bad = None
    if v is None or isinstance(v, (bool, np.bool_, str, bytes, Mapping)):
        bad = f"holds {v!r}"
    else:
        try:
            a = np.asarray(v)
        except (TypeError, ValueError) as e:
            a, bad = None, f"holds {v!r} ({e})"
        if a is not None:
            if a.dtype.kind in "iu":
                return tuple(int(x) for x in a.reshape(-1))
            if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                return tuple(int(x) for x in a.reshape(-1))
            bad = f"holds {v!r} of dtype {a.dtype}"
    raise node_error(ParameterError, node, field, f"{bad}, not whole numbers", f"store {field} as integers")


def _int(node: str, field: str, v: Any) -> int:
    vals = _ints(node, field, v)
    if len(vals) != 1:
        raise node_error(ParameterError, node, field, f"holds {len(vals)} values, expected one integer",
                         f"store {field} as a single integer")
    return vals[0]


def _pair(node: str, field: str, v: Any, n: int = 2) -> tuple[int, ...]:
    a = _ints(node, field, v)
    if len(a) == 1:
        return a * n
    if len(a) != n:
        raise node_error(ShapeError, node, field, f"{len(a)} values for {n} spatial dims", f"give {n} values")
    return a


def _conv_padding(node: str, p: Mapping[str, Any], nd: int, kernel: Shape, dilation) -> tuple:
    """Padding as ((before, after), ...) per spatial dim, PyTorch conventions."""
    pad = p["padding"]
    if isinstance(pad, np.ndarray) and pad.dtype.kind in "SUO" and pad.ndim == 0:
        pad = pad.item()
    if isinstance(pad, (bytes, np.bytes_)):
        pad = pad.decode("utf8", "replace")  # a non-text padding is then an unknown padding, named below
    if isinstance(pad, np.str_):
        pad = str(pad)
    if isinstance(pad, str):
        if pad == "valid":
            return tuple((0, 0) for _ in range(nd))
        if pad == "same":
            out = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                out.append((total // 2, total - total // 2))
            return tuple(out)
        raise node_error(
            ParameterError, node, "padding", f"unknown padding {pad!r}", "use 'same', 'valid' or ints"
        )
    pads = _pair(node, "padding", pad, nd)
    if min(pads) < 0:
        raise node_error(ParameterError, node, "padding", f"padding {pads} is negative", "use padding >= 0")
    return tuple((q, q) for q in pads)


def conv_geometry(node: str, p: Mapping[str, Any], nd: int) -> dict:
    """Stride, padding ((lo, hi) per dim), dilation and groups of a Conv1d/Conv2d, normalised."""
    w = np.asarray(p["weight"])
    if w.ndim != nd + 2:
        raise node_error(
            ShapeError,
            node,
            "weight",
            f"weight has shape {w.shape}, expected {nd + 2} dims (C_out, C_in/groups, kernel...)",
            "store the weight in PyTorch layout",
        )
    kernel = tuple(int(k) for k in w.shape[2:])
    stride = _pair(node, "stride", p["stride"], nd)
    dilation = _pair(node, "dilation", p["dilation"], nd)
    groups = _int(node, "groups", p["groups"])
    if groups < 1 or w.shape[0] % groups:
        raise node_error(
            ParameterError, node, "groups", f"groups={groups} does not divide C_out={w.shape[0]}",
            "use a positive divisor of the number of output channels",
        )
    for f, vals in (("stride", stride), ("dilation", dilation)):
        if min(vals) < 1:
            raise node_error(ParameterError, node, f, f"{f} {vals} has a value < 1", f"use {f} >= 1")
    check_geometry(node, "weight", kernel)
    check_geometry(node, "stride", stride)
    check_geometry(node, "dilation", dilation)
    padding = _conv_padding(node, p, nd, kernel, dilation)
    check_geometry(node, "padding", [q for pair in padding for q in pair])
    return dict(kernel=kernel, stride=stride, dilation=dilation, groups=groups, padding=padding)


def _conv_expected(nd: int):
    def expected(node: str, p: Mapping[str, Any]) -> Shape | None:
        g = conv_geometry(node, p, nd)
        bias = np.asarray(p["bias"])
        w = np.asarray(p["weight"])
        if bias.shape not in ((w.shape[0],), ()):
            raise node_error(
                ShapeError, node, "bias", f"bias shape {bias.shape} for {w.shape[0]} output channels",
                f"give a bias of shape ({w.shape[0]},)",
            )
        if p.get("input_shape") is None:
            return None
        if nd == 1 and np.ndim(p["input_shape"]) != 0:  # nir.Conv1d takes one int, nothing else
            raise node_error(ShapeError, node, "input_shape", f"input_shape {p['input_shape']!r} is not one integer",
                             "give the input length as a single integer")
        spatial = _ints(node, "input_shape", p["input_shape"])
        if len(spatial) != nd or min(spatial) < 1 or max(spatial) > MAX_DIM:
            raise node_error(ShapeError, node, "input_shape", f"input_shape {spatial} is not {nd} positive sizes",
                             f"give the {nd} spatial sizes of the input (without channels)")
        return check_shape(node, "input_shape", (int(w.shape[1]) * g["groups"], *spatial))

    return expected


def _conv_output(nd: int):
    def output(node: str, p: Mapping[str, Any], s: Shape) -> Shape:
        g = conv_geometry(node, p, nd)
        w = np.asarray(p["weight"])
        c_in = int(w.shape[1]) * g["groups"]
        if len(s) != nd + 1 or s[0] != c_in:
            raise node_error(
                ShapeError, node, "input", f"got input shape {s}, expected ({c_in}, <{nd} spatial dims>)",
                "feed it a (channels, spatial...) tensor with matching channels",
            )
        out = [int(w.shape[0])]
        for i in range(nd):
            lo, hi = g["padding"][i]
            n = (s[1 + i] + lo + hi - g["dilation"][i] * (g["kernel"][i] - 1) - 1) // g["stride"][i] + 1
            if n < 1:
                raise node_error(
                    ShapeError, node, "input", f"spatial size {s[1 + i]} is smaller than the kernel",
                    "use a larger input or a smaller kernel",
                )
            out.append(int(n))
        return tuple(out)

    return output


def pool_geometry(node: str, p: Mapping[str, Any]) -> dict:
    """Kernel size, stride and padding (each one int per spatial dim) of a SumPool2d/AvgPool2d, checked."""
    kernel = _pair(node, "kernel_size", p["kernel_size"])
    stride = _pair(node, "stride", p["stride"])
    padding = _pair(node, "padding", p["padding"])
    for f, vals, lo in (("kernel_size", kernel, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if min(vals) < lo:
            raise node_error(ParameterError, node, f, f"{f} {vals} has a value < {lo}", f"use {f} >= {lo}")
        check_geometry(node, f, vals)
    return dict(kernel=kernel, stride=stride, padding=padding)


def _pool_expected(node: str, p: Mapping[str, Any]) -> None:
    pool_geometry(node, p)  # validates the fields; any (C, H, W) input fits
    return None


def _pool_output(node: str, p: Mapping[str, Any], s: Shape) -> Shape:
    g = pool_geometry(node, p)
    if len(s) != 3:
        raise node_error(
            ShapeError, node, "input", f"got input shape {s}, pooling needs (C, H, W)", "feed it an image"
        )
    out = [s[0]]
    for i in range(2):
        n = (s[1 + i] + 2 * g["padding"][i] - g["kernel"][i]) // g["stride"][i] + 1
        if n < 1:
            raise node_error(
                ShapeError, node, "kernel_size", f"kernel larger than input {s}", "use a smaller kernel"
            )
        out.append(int(n))
    return tuple(out)


def flatten_dims(node: str, p: Mapping[str, Any], s: Shape) -> tuple[int, int]:
    """A Flatten's ``(start_dim, end_dim)`` as non-negative dims of input shape ``s``, checked."""
    nd = len(s)
    start = _int(node, "start_dim", p["start_dim"])
    end = _int(node, "end_dim", p["end_dim"])
    a = start + nd if start < 0 else start
    b = end + nd if end < 0 else end
    if not (0 <= a <= b < nd):
        raise node_error(
            ShapeError, node, "start_dim",
            f"start_dim={start}, end_dim={end} do not fit input shape {s} (dims count without batch)",
            "count dims from the first non-batch dimension",
        )
    return a, b


def _flatten_expected(node: str, p: Mapping[str, Any]) -> Shape | None:
    _int(node, "start_dim", p["start_dim"])
    _int(node, "end_dim", p["end_dim"])
    it = p.get("input_type")
    shape = it.get("input") if isinstance(it, Mapping) else it
    if shape is None:
        return None
    shp = check_shape(node, "input_type", _ints(node, "input_type", shape))
    flatten_dims(node, p, shp)  # the dims must fit the declared input shape
    return shp


def _flatten_output(node: str, p: Mapping[str, Any], s: Shape) -> Shape:
    a, b = flatten_dims(node, p, s)
    return check_shape(node, "input_type", (*s[:a], math.prod(s[a : b + 1]), *s[b + 1 :]))


def _dense_expected(node: str, p: Mapping[str, Any]) -> Shape:
    w = np.asarray(p["weight"])
    if w.ndim != 2:
        raise node_error(
            ShapeError, node, "weight", f"weight has shape {w.shape}; only 2-D (out, in) weights are supported",
            "store the weight as an (out_features, in_features) matrix",
        )
    if "bias" in p:
        b = np.asarray(p["bias"])
        if b.shape != (w.shape[0],):
            raise node_error(
                ShapeError, node, "bias", f"bias shape {b.shape} does not match weight rows {w.shape[0]}",
                f"give a bias of shape ({w.shape[0]},)",
            )
    return (int(w.shape[1]),)


def _dense_output(node: str, p: Mapping[str, Any], s: Shape) -> Shape:
    return (int(np.asarray(p["weight"]).shape[0]),)


def _io_expected(key: str, sub: str):
    def expected(node: str, p: Mapping[str, Any]) -> Shape | None:
        t = p[key]
        shape = t.get(sub) if isinstance(t, Mapping) else t
        if shape is None:
            return None
        return check_shape(node, key, _ints(node, key, shape))

    return expected


def _spec(type_: str, fields, **kw) -> NodeSpec:
    return NodeSpec(type=type_, nir_class=getattr(nir, type_), fields=tuple(fields), **kw)


_NEURON_FIELDS = {
    "I": ("r",),
    "IF": ("r", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"),
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
}
_NEURON_STATE = {
    "I": ("v",), "IF": ("v",), "LI": ("v",), "LIF": ("v",), "CubaLI": ("i", "v"), "CubaLIF": ("i", "v"),
}
_NEURON_EQ = {
    "I": "dv/dt = r x ; y = v",
    "IF": "dv/dt = r x ; z = [v > v_threshold] ; v <- reset",
    "LI": "tau dv/dt = v_leak - v + r x ; y = v",
    "LIF": "tau dv/dt = v_leak - v + r x ; z = [v > v_threshold] ; v <- reset",
    "CubaLI": "tau_syn di/dt = -i + w_in x ; tau_mem dv/dt = v_leak - v + r i ; y = v",
    "CubaLIF": "tau_syn di/dt = -i + w_in x ; tau_mem dv/dt = v_leak - v + r i ; z = [v > v_threshold]",
}

#: The registry: NIR node type name -> spec. Extend with :func:`register_node`.
NODE_SPECS: dict[str, NodeSpec] = {}


def register_node(spec: NodeSpec, *, replace: bool = False) -> None:
    """Add a node type to the registry (a kernel for it is registered in ``nirbridge.kernels``)."""
    if spec.type in NODE_SPECS and not replace:
        raise UnsupportedError(f"node type {spec.type!r} is registered already. Fix: pass replace=True")
    NODE_SPECS[spec.type] = spec


for _t in ("I", "IF", "LI", "LIF", "CubaLI", "CubaLIF"):
    register_node(
        _spec(
            _t,
            _NEURON_FIELDS[_t],
            float_params=_NEURON_FIELDS[_t],
            state=_NEURON_STATE[_t],
            spiking=_t in ("IF", "LIF", "CubaLIF"),
            expected_input=_same_shape(*_NEURON_FIELDS[_t]),
            equation=_NEURON_EQ[_t],
            param_kinds={f: _NEURON_KINDS[f] for f in _NEURON_FIELDS[_t]},
        )
    )

register_node(_spec("Input", ("input_type",), expected_input=_io_expected("input_type", "input"),
                    equation="graph input"))
register_node(_spec("Output", ("output_type",), expected_input=_io_expected("output_type", "output"),
                    equation="graph output"))
register_node(_spec("Affine", ("weight", "bias"), float_params=("weight", "bias"),
                    expected_input=_dense_expected, output_shape=_dense_output, equation="y = W x + b"))
register_node(_spec("Linear", ("weight",), float_params=("weight",),
                    expected_input=_dense_expected, output_shape=_dense_output, equation="y = W x"))
register_node(_spec("Scale", ("scale",), float_params=("scale",), expected_input=_same_shape("scale"),
                    equation="y = s * x"))
register_node(_spec("Threshold", ("threshold",), float_params=("threshold",),
                    expected_input=_same_shape("threshold"), spiking=True, equation="z = [x > threshold]",
                    param_kinds={"threshold": "threshold"}))
register_node(_spec("Delay", ("delay",), float_params=("delay",), expected_input=_same_shape("delay"),
                    state=("buffer",), equation="y(t) = x(t - delay)", param_kinds={"delay": "structure"}))
register_node(_spec("Flatten", ("input_type", "start_dim", "end_dim"), expected_input=_flatten_expected,
                    output_shape=_flatten_output, equation="y = reshape(x)"))
for _nd in (1, 2):
    register_node(
        _spec(
            f"Conv{_nd}d",
            ("input_shape", "weight", "stride", "padding", "dilation", "groups", "bias"),
            float_params=("weight", "bias"),
            expected_input=_conv_expected(_nd),
            output_shape=_conv_output(_nd),
            equation=f"y = conv{_nd}d(x, W) + b (PyTorch layout)",
        )
    )
for _t, _eq in (("SumPool2d", "y = sum over each window"), ("AvgPool2d", "y = mean over each window")):
    register_node(_spec(_t, ("kernel_size", "stride", "padding"), expected_input=_pool_expected,
                        output_shape=_pool_output, equation=_eq))

#: The nested-graph pseudo type (a NIRGraph node inside a graph); handled by ``Graph`` itself.
SUBGRAPH = "NIRGraph"


#: fields a node may leave as None (nir leaves them unset when it cannot infer them)
OPTIONAL_FIELDS = frozenset({"input_shape", "input_type", "output_type"})


def check_params(node: str, spec: NodeSpec, params: Mapping[str, Any], *, missing_ok: Iterable[str] = ()) -> None:
    """Validate one node's parameters; raise an error that names the node and the field.

    Checks, in order: every field of ``spec`` is present (``missing_ok`` may be absent, and the
    :data:`OPTIONAL_FIELDS` may be None); float parameters are NumPy arrays of real numbers, finite;
    time constants are > 0 and delays >= 0; integer fields hold whole numbers; the parameter shapes
    fit together (``spec.expected_input``).
    """
    missing_ok = set(missing_ok)
    for f in spec.fields:
        if f in missing_ok and f not in params:
            continue
        if f not in params or (params[f] is None and f not in OPTIONAL_FIELDS):
            raise node_error(ParameterError, node, f, f"{spec.type} parameter {f!r} is missing",
                             f"give {f} as a NumPy array")
    for f in spec.float_params:
        if f not in params:
            continue
        v = params[f]
        if not isinstance(v, (np.ndarray, np.generic)):
            raise node_error(ParameterError, node, f, f"is a {type(v).__name__} ({v!r:.60}), not a NumPy array",
                             f"pass np.asarray(...) for {f}")
        if v.dtype.kind not in "fiu":
            raise node_error(ParameterError, node, f, f"has dtype {v.dtype}, not a real number type",
                             "use a float32 or float64 array")
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            bad = np.argwhere(~np.isfinite(np.atleast_1d(v)))[0]
            first = np.atleast_1d(v)[tuple(bad)]
            raise node_error(ParameterError, node, f,
                             f"holds {first} (non-finite; first at index {tuple(int(i) for i in bad)})",
                             "replace NaN and inf by finite values")
        if spec.param_kinds[f] == "time_constant" and np.any(v <= 0):
            raise node_error(ParameterError, node, f, f"holds a time constant <= 0 (min {np.min(v)})",
                             "time constants are positive, in seconds")
        if spec.param_kinds[f] == "structure" and np.any(v < 0):
            raise node_error(ParameterError, node, f, f"holds a negative delay (min {np.min(v)})",
                             "delays are >= 0 seconds")
    for f in spec.fields:  # the other fields (shapes, strides, ...) must at least be regular arrays
        v = params.get(f)
        if f in spec.float_params or not isinstance(v, (list, tuple)):
            continue
        try:
            np.asarray(v)
        except (ValueError, TypeError, OverflowError) as e:
            raise node_error(ParameterError, node, f, f"{v!r:.60} is not a regular array ({type(e).__name__}: "
                             f"{str(e)[:80]})", f"give {f} as a number or a flat list of numbers") from None
    spec.expected_input(node, params)  # integer fields and the shape consistency of the parameters


def get_spec(type_name: str, node: str = "?") -> NodeSpec:
    """The spec of a node type name; an unknown type raises an error naming ``node``."""
    try:
        return NODE_SPECS[type_name]
    except KeyError:
        raise node_error(
            UnknownNodeError,
            node,
            "type",
            f"unknown node type {type_name!r} (known: {sorted(NODE_SPECS)})",
            "use a NIR 1.0.8 node type, or register a spec with nirbridge.register_node",
        ) from None


def spec_for_nir(obj: Any, node: str) -> NodeSpec:
    """The spec for a ``nir`` node object; its class must be the registered ``nir`` class."""
    spec = NODE_SPECS.get(type(obj).__name__)
    if spec is None or not isinstance(obj, spec.nir_class):
        raise node_error(
            UnknownNodeError,
            node,
            "type",
            f"object of type {type(obj).__name__!r} is not a known NIR node",
            "use a NIR 1.0.8 node type, or register a spec with nirbridge.register_node",
        )
    return spec
