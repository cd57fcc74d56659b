r"""Dynamics: the discretisation choices NIR leaves open, made explicit.

A NIR file stores continuous-time equations and parameters only: no time step, no integration
scheme, no reset rule, no spike comparison, no update order. :class:`Dynamics` names each choice,
and every backend (reference, JAX, torch) implements exactly the updates below, written once in
:mod:`nirbridge.kernels`. With ``a = exp(-dt/tau)`` and ``k = dt/tau``:

===========  ======================================  ==========================================
node         ``method="euler"``                       ``method="exact"`` (zero-order hold on x)
===========  ======================================  ==========================================
LI / LIF     ``v += k (v_leak - v + r x)``            ``v = u + (v - u) a``, ``u = v_leak + r x``
I / IF       ``v += dt r x``                          same (exact for a held input)
CubaLI(F)    ``i += k_s (w_in x - i)``, then          ``i = w_in x + (i - w_in x) a_s``, and ``v``
             ``v += k_m (v_leak - v + r i')``         the exact solution of the coupled system
Threshold    ``z = [x > threshold]``                  same
Delay        ``y[t] = x[t - round(delay/dt)]``        same
===========  ======================================  ==========================================

``i'`` is the current *before* this step's update with ``synapse="simultaneous"`` (NIR's own
reference implementation) and *after* it with ``synapse="current_first"`` (snnTorch, Norse,
Spyx and every other library). With ``method="exact"``, ``"simultaneous"`` is the exact
solution of the two coupled equations over one step, and ``"current_first"`` updates ``i``
exactly and then ``v`` with ``i`` held at its new value.

Spiking nodes (LIF, IF, CubaLIF) then test the *updated* voltage: ``z = [v > v_threshold]`` (or
``>=`` with ``threshold=">="``), a spike is 1 for one step (not 1/dt), and the reset happens in
the same step: ``reset="zero"`` sets ``v = v_reset`` (NIR 1.0.8), ``reset="subtract"`` sets
``v = v - v_threshold``. Every state starts at zero.

Gradients: the spike's derivative is replaced by a surrogate, ``surrogate="fast_sigmoid"``
(``1 / (1 + slope |v - v_threshold|)^2``, slope 25, as in snnTorch) by default, or
``"sigmoid"`` (``slope s (1 - s)`` with ``s = sigmoid(slope (v - v_threshold))``), or
``"straight_through"`` (derivative 1). The forward values never depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .errors import DynamicsError

__all__ = ["Dynamics", "SURROGATES"]

METHODS = ("euler", "exact")
RESETS = ("zero", "subtract")
THRESHOLDS = (">", ">=")
SYNAPSES = ("simultaneous", "current_first")
SURROGATES = ("fast_sigmoid", "sigmoid", "straight_through")

_PRESETS: dict[str, dict[str, Any]] = {
    # the plain reading of the NIR 1.0.8 spec; dt must be given
    "nir": dict(method="euler", reset="zero", threshold=">", synapse="simultaneous"),
}


@dataclass(frozen=True)
class Dynamics:
    """How to turn NIR's continuous-time equations into discrete steps.

    Args:
        dt: the time step in seconds (required, > 0). There is no default on purpose: every
            library assumes another one (snnTorch 1e-4, Norse 1e-3, Sinabs 1 step).
        method: ``"euler"`` (forward Euler) or ``"exact"`` (zero-order hold on the input).
        reset: ``"zero"`` (``v = v_reset``) or ``"subtract"`` (``v -= v_threshold``).
        threshold: ``">"`` or ``">="``, the spike test on the updated voltage.
        synapse: ``"simultaneous"`` or ``"current_first"`` (CubaLI/CubaLIF update order).
        surrogate: the spike's surrogate derivative, one of :data:`SURROGATES`.
        surrogate_slope: the surrogate's slope parameter.

    >>> Dynamics(dt=1e-4)
    Dynamics(dt=0.0001, method='euler', reset='zero', threshold='>', synapse='simultaneous')
    """

    dt: float
    method: str = "euler"
    reset: str = "zero"
    threshold: str = ">"
    synapse: str = "simultaneous"
    surrogate: str = "fast_sigmoid"
    surrogate_slope: float = field(default=25.0)

    def __post_init__(self):
        try:
            dt = float(self.dt)
        except (TypeError, ValueError):
            raise DynamicsError(
                f"Dynamics.dt must be a number of seconds, got {self.dt!r}. Fix: e.g. dt=1e-4"
            ) from None
        if not dt > 0 or dt != dt or dt == float("inf"):
            raise DynamicsError(f"Dynamics.dt must be a finite number > 0, got {self.dt!r}. Fix: e.g. dt=1e-4")
        object.__setattr__(self, "dt", dt)
        for name, allowed in (("method", METHODS), ("reset", RESETS), ("threshold", THRESHOLDS),
                              ("synapse", SYNAPSES), ("surrogate", SURROGATES)):
            v = getattr(self, name)
            if v not in allowed:
                raise DynamicsError(f"Dynamics.{name}={v!r} is not one of {allowed}. Fix: pick one of them")
        slope = float(self.surrogate_slope)
        if not slope > 0:
            raise DynamicsError(f"Dynamics.surrogate_slope must be > 0, got {self.surrogate_slope!r}")
        object.__setattr__(self, "surrogate_slope", slope)

    def __repr__(self) -> str:
        text = (f"Dynamics(dt={self.dt!r}, method={self.method!r}, reset={self.reset!r}, "
                f"threshold={self.threshold!r}, synapse={self.synapse!r}")
        if (self.surrogate, self.surrogate_slope) != ("fast_sigmoid", 25.0):
            text += f", surrogate={self.surrogate!r}, surrogate_slope={self.surrogate_slope!r}"
        return text + ")"

    def replace(self, **changes: Any) -> Dynamics:
        """A copy with some fields changed (Dynamics is immutable)."""
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Dynamics:
        """The Dynamics that reproduces a library's reading of NIR (only ``"nir"`` so far).

        ``"nir"`` is the plain reading of the NIR 1.0.8 spec: Euler, reset to ``v_reset``, ``>``,
        simultaneous synapse; it has no dt of its own, so ``dt`` must be given.
        """
        if name not in _PRESETS:
            raise DynamicsError(
                f"no Dynamics preset {name!r}; known presets: {sorted(_PRESETS)}. Fix: use one of them, "
                "or build Dynamics(dt=..., method=..., reset=..., threshold=..., synapse=...) yourself"
            )
        kw = dict(_PRESETS[name])
        kw.update(overrides)
        if "dt" not in kw:
            raise DynamicsError(f"preset {name!r} has no dt of its own. Fix: Dynamics.preset({name!r}, dt=1e-4)")
        return cls(**kw)
