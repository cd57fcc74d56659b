"""Kernels of the stateless nodes: identities, dense and convolutional products, scaling,
thresholds, pooling and reshaping. Their equations are NIR's (PyTorch conventions)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..nodes import conv_geometry, flatten_dims, pool_geometry
from .base import Kernel, NoCoeffs, NoState, no_init, register_kernel


class DenseCoeffs(NamedTuple):
    """Affine (``y = W x + b``) and Linear (``bias`` None); ``weight`` is ``ops.dense_weight(W)``."""

    weight: Any
    bias: Any


class ScaleCoeffs(NamedTuple):
    """Scale: ``y = scale * x``."""

    scale: Any


class ThresholdCoeffs(NamedTuple):
    """Threshold: ``y = [x > threshold]``."""

    threshold: Any


class ConvCoeffs(NamedTuple):
    """Conv1d / Conv2d: weight ``(C_out, C_in/groups, *kernel)`` and bias ``(C_out,)`` (PyTorch layout)."""

    weight: Any
    bias: Any


def _no_coeffs(ops, p) -> NoCoeffs:
    return NoCoeffs()


def _identity(ops, c, state, x):
    return state, x


@register_kernel("Input")
@register_kernel("Output")
def identity(step, dyn) -> Kernel:
    """Input and Output nodes (and a nested graph's own Input/Output): ``y = x``."""
    return Kernel(_no_coeffs, no_init, _identity, layout="element")


@register_kernel("Affine")
@register_kernel("Linear")
def dense(step, dyn) -> Kernel:
    """``y = W x + b`` (Linear: no ``b``), over the last axis."""

    def prepare(ops, p) -> DenseCoeffs:
        return DenseCoeffs(ops.dense_weight(p["weight"]), p.get("bias"))

    def run(ops, c, state, x):
        return state, ops.affine(x, c.weight, c.bias)

    return Kernel(prepare, no_init, run)


@register_kernel("Scale")
def scale(step, dyn) -> Kernel:
    """``y = scale * x``, element by element."""

    def prepare(ops, p) -> ScaleCoeffs:
        return ScaleCoeffs(p["scale"])

    def run(ops, c, state, x):
        return state, x * c.scale

    return Kernel(prepare, no_init, run, layout="element")


@register_kernel("Threshold")
def threshold(step, dyn) -> Kernel:
    """``y = [x > threshold]`` (``>=`` with ``Dynamics(threshold=">=")``), with the surrogate gradient."""
    d = dyn.for_node(step.name, step.node.type)
    inclusive, surrogate, slope = d.threshold == ">=", d.surrogate, d.surrogate_slope

    def prepare(ops, p) -> ThresholdCoeffs:
        return ThresholdCoeffs(p["threshold"])

    def run(ops, c, state, x):
        return state, ops.spike(x, c.threshold, inclusive, surrogate, slope)

    return Kernel(prepare, no_init, run, layout="element")


@register_kernel("Flatten")
def flatten(step, dyn) -> Kernel:
    """Merge the dims ``start_dim..end_dim`` (counted without the batch axis)."""
    flatten_dims(step.name, step.node.params, step.input_shape)  # validates the dims
    n_in, out_shape = len(step.input_shape), tuple(step.output_shape)

    def run(ops, c, state, x):
        lead = tuple(x.shape[: x.ndim - n_in])
        return state, x.reshape(lead + out_shape)

    return Kernel(_no_coeffs, no_init, run)


def _conv(nd: int):
    def factory(step, dyn) -> Kernel:
        geom = conv_geometry(step.name, step.node.params, nd)

        def prepare(ops, p) -> ConvCoeffs:
            return ConvCoeffs(p["weight"], p["bias"])

        def run(ops, c, state, x):
            return state, ops.conv(x, c.weight, c.bias, geom, nd)

        return Kernel(prepare, no_init, run, layout="conv" if nd == 2 else "none")

    factory.__doc__ = f"PyTorch's conv{nd}d (stride, padding incl. 'same', dilation, groups) plus the bias."
    return factory


register_kernel("Conv1d", _conv(1))
register_kernel("Conv2d", _conv(2))


def _pool(average: bool):
    def factory(step, dyn) -> Kernel:
        geom = pool_geometry(step.name, step.node.params)

        def run(ops, c, state, x):
            return state, ops.pool(x, geom, average)

        return Kernel(_no_coeffs, no_init, run, layout="pool")

    factory.__doc__ = "The " + ("mean" if average else "sum") + " over each window (zero padding)."
    return factory


register_kernel("SumPool2d", _pool(False))
register_kernel("AvgPool2d", _pool(True))

__all__ = ["ConvCoeffs", "DenseCoeffs", "NoCoeffs", "NoState", "ScaleCoeffs", "ThresholdCoeffs", "dense",
           "flatten", "identity", "scale", "threshold"]
