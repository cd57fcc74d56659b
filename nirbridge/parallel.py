r"""Beyond one device, on JAX's own machinery: batch sharding, parameter sweeps, several processes.

* **Batch over devices**: ``nb.to_jax(graph, dyn, devices=jax.devices())`` (or
  ``nb.simulate(..., backend="jax", sharding=mesh)``) splits the batch of every run over a
  ``jax.sharding.Mesh``: inputs placed with ``NamedSharding(mesh, P(None, "batch"))``
  (:func:`batch_sharding`), parameters replicated; ``jax.jit`` of the scan keeps the outputs
  sharded, and ``jax.grad`` through it gives the gradient of the whole batch.
* **Parameter sweeps**: :func:`sweep` runs one graph with many parameter sets at once,
  ``jax.vmap`` over the stacked sets (:func:`stack_params`) inside one ``jax.jit``, the sweep
  axis split over the devices (``P("sweep")``).
* **Several processes** (several hosts, or several GPUs each run by its own process):
  :func:`initialize` calls ``jax.distributed.initialize`` on each process; then every process
  passes its own rows of the batch and :func:`place_batch` builds the global array
  (``jax.make_array_from_process_local_data``); :func:`gather` brings a result back as NumPy
  on every process (``multihost_utils.process_allgather``).

Results equal the one-device run: spikes identical, voltages to float32 rounding (the CPU matmul
rounds by the rows each device holds). See the scaling page of the docs for a GPU node and a
multi-host cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .backends.jax import batch_sharding, compiled_model, place_batch, replicated
from .errors import InputError
from .io import as_graph

__all__ = ["batch_sharding", "gather", "initialize", "place_batch", "replicated", "stack_params", "sweep",
           "sweep_mesh"]


def initialize(coordinator: str, num_processes: int, process_id: int, *, bind: str | None = None,
               timeout: int = 300, **kwargs: Any) -> None:
    """Join a multi-process JAX run: ``jax.distributed.initialize`` with the coordinator bound to
    ``bind`` (default: the coordinator's own address, not every interface) and timeouts in seconds.
    Call it first in each process, before any other JAX call. Extra ``kwargs`` go to
    ``jax.distributed.initialize`` (e.g. ``local_device_ids``)."""
    if not isinstance(coordinator, str) or ":" not in coordinator:
        raise InputError(f"coordinator={coordinator!r} is not 'host:port'. Fix: e.g. '10.0.0.1:1234'")
    jax.distributed.initialize(coordinator_address=coordinator, coordinator_bind_address=bind or coordinator,
                               num_processes=int(num_processes), process_id=int(process_id),
                               initialization_timeout=int(timeout), **kwargs)


def gather(tree: Any) -> Any:
    """Every array of ``tree`` as a NumPy array holding all of it, on every process (a global array
    of several processes is gathered with ``multihost_utils.process_allgather``)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            if a.sharding.is_fully_replicated:  # every process holds all of it
                return np.asarray(a.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(one, tree)


def stack_params(sets: Sequence[Mapping]) -> dict:
    """Parameter sets (each ``{node: {field: array}}``, e.g. edited copies of ``model.params``)
    stacked along a new leading sweep axis."""
    sets = list(sets)
    if not sets:
        raise InputError("stack_params() got no parameter sets. Fix: pass a list of model.params-like dicts")
    return jax.tree.map(lambda *a: jnp.stack(a), *sets)


def sweep_mesh(devices: Any = None, *, batch: int = 1):
    """A 2-D mesh ``("sweep", "batch")`` over ``devices`` (default all): ``batch`` devices per
    parameter set, the rest along the sweep."""
    from jax.sharding import Mesh

    devs = np.asarray(jax.devices() if devices is None else list(devices), dtype=object)
    if devs.size % batch:
        raise InputError(f"{devs.size} devices do not split into groups of batch={batch}. Fix: pick a divisor")
    return Mesh(devs.reshape(devs.size // batch, batch), ("sweep", "batch"))


def sweep(graph: Any, dynamics: Any, params: Mapping, x: Any, *, mesh: Any = None, record: Any = None,
          dtype: Any = "float32", **options: Any) -> dict:
    """Run ``graph`` once per parameter set: ``params`` holds the sets stacked on a leading axis
    (:func:`stack_params`), ``x`` is one ``(T, B, ...)`` input for all of them.

    One ``jax.jit(jax.vmap(run))``; with ``mesh`` (a Mesh with a ``"sweep"`` axis, and optionally
    ``"batch"``, see :func:`sweep_mesh`), the sweep axis is split over the devices (and the batch
    over the ``"batch"`` axis). The number of sets must divide by the devices on ``"sweep"``.
    Returns ``{key: (S, T, B, ...)}`` NumPy arrays (keys as :func:`nirbridge.simulate`'s)."""
    from jax.sharding import NamedSharding, PartitionSpec

    graph = as_graph(graph, "sweep")
    model = compiled_model(graph, dynamics, dtype=dtype, **options)
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise InputError("sweep() got no parameters. Fix: pass stack_params([...]) of model.params-like dicts")
    S = int(np.shape(leaves[0])[0])
    if any(np.shape(a)[:1] != (S,) for a in leaves):
        raise InputError("the stacked parameter sets disagree on their leading (sweep) axis. Fix: stack_params(sets)")
    fn = model._core._jitted.get(("sweep", repr(record)))
    if fn is None:
        def one(p, xs):
            return dict(model.run(p, xs, record=record)[0])

        fn = model._core._jitted[("sweep", repr(record))] = jax.jit(jax.vmap(one, in_axes=(0, None)))
    if mesh is not None:
        if "sweep" not in mesh.axis_names:
            raise InputError(f"the mesh has axes {mesh.axis_names}, no 'sweep'. Fix: nirbridge.parallel.sweep_mesh()")
        n = mesh.shape["sweep"]
        if S % n:
            raise InputError(f"{S} parameter sets do not split over {n} devices. Fix: a multiple of {n} sets")
        params = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(
            mesh, PartitionSpec("sweep", *([None] * (np.ndim(a) - 1))))), params)
        b = "batch" if "batch" in mesh.axis_names else None
        x = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(
            mesh, PartitionSpec(None, b, *([None] * (np.ndim(a) - 2))))), x)
    return gather(fn(params, x))
