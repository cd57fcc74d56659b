"""Beyond one device (``nirbridge.parallel``, ``to_jax(devices=...)``, ``simulate(sharding=...)``): every
result equals the one-device run, spikes identical and voltages to float32 rounding, gradients too.

Several devices need XLA's flag set before JAX is imported, so each check runs in a fresh Python
process: four forced host devices in one process, and two processes joined by ``jax.distributed``
on 127.0.0.1 (a free port, files for their output, one deadline, every process reaped)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]

# a graph with spikes, a recurrent edge and a voltage readout; B=128 (32 rows per device of four)
_SETUP = textwrap.dedent("""
    import sys
    import numpy as np
    import nir
    import nirbridge as nb

    def make(seed=0, n_in=20, n=32, n_out=4):
        rng = np.random.default_rng(seed)
        nodes = {
            "input": nir.Input(input_type={"input": np.array([n_in])}),
            "fc": nir.Affine(weight=rng.normal(0, 1.0, (n, n_in)), bias=rng.normal(0, 0.1, n)),
            "lif": nir.LIF(tau=rng.uniform(5e-3, 2e-2, n), r=np.ones(n), v_leak=np.zeros(n),
                           v_threshold=np.ones(n), v_reset=np.zeros(n)),
            "rec": nir.Linear(weight=rng.normal(0, 0.3, (n, n))),
            "out": nir.Affine(weight=rng.normal(0, 0.5, (n_out, n)), bias=np.zeros(n_out)),
            "li": nir.LI(tau=np.full(n_out, 1e-2), r=np.ones(n_out), v_leak=np.zeros(n_out)),
            "output": nir.Output(output_type={"output": np.array([n_out])}),
        }
        edges = [("input", "fc"), ("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out"),
                 ("out", "li"), ("li", "output")]
        g = nb.Graph.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
        x = (rng.random((80, 128, n_in)) < 0.3).astype(np.float32)
        return g, x, nb.Dynamics(dt=1e-3)

    def same(a, b, what, spikes=False):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, (what, a.shape, b.shape)
        if spikes:
            assert np.array_equal(a, b), f"{what}: spikes differ in {int((a != b).sum())} places"
        else:
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=what)
""")

_DEVICES = _SETUP + textwrap.dedent("""
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh
    from nirbridge import parallel
    from nirbridge.stream import stream

    assert len(jax.devices()) == 4, jax.devices()
    g, x, dyn = make()
    rec = ["lif", ("lif", "v")]
    one = nb.to_jax(g, dyn)
    want, want_state = one.run(one.params, x, record=rec)

    # to_jax(devices=...): the batch over four devices, outputs stay sharded
    many = nb.to_jax(g, dyn, devices=jax.devices())
    got, state = many.run(many.params, x, record=rec)
    assert len(got["lif"].sharding.device_set) == 4, got["lif"].sharding
    same(got["lif"], want["lif"], "to_jax(devices) spikes", spikes=True)
    same(got["output"], want["output"], "to_jax(devices) output")
    same(got[("lif", "v")], want[("lif", "v")], "to_jax(devices) voltage")
    same(state["nodes"]["lif"]["v"], want_state["nodes"]["lif"]["v"], "final state")

    # a Mesh, and simulate(sharding=...)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sim = nb.simulate(g, x, dyn, backend="jax", record=rec, sharding=mesh)
    same(sim["lif"], want["lif"], "simulate(sharding) spikes", spikes=True)
    same(sim[("lif", "v")], want[("lif", "v")], "simulate(sharding) voltage")

    # in chunks and sharded at once
    st = stream(g, x, dyn, chunk=30, keep=("count", "last"), record=["lif"], sharding=mesh)
    same(st["count"]["lif"], np.asarray(want["lif"]).sum(0), "stream(sharding) counts", spikes=True)

    # gradients through the sharded run
    def loss(m):
        return lambda p: jnp.mean(m.run(p, x)[0]["output"] ** 2)
    g1 = jax.grad(loss(one))(one.params)
    g4 = jax.grad(loss(many))(many.params)
    for node in g1:
        for f in g1[node]:
            a, b = np.asarray(g4[node][f]), np.asarray(g1[node][f])
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(b).max() + 1e-30),
                                       err_msg=f"grad {node}.{f}")
    assert float(np.abs(np.asarray(g1["fc"]["weight"])).max()) > 0

    # a parameter sweep: four threshold scales, the sweep axis over the four devices
    sets = []
    for s in (0.6, 0.8, 1.0, 1.2):
        p = jax.tree.map(lambda a: a, one.params)
        p["lif"] = {**p["lif"], "v_threshold": p["lif"]["v_threshold"] * s}
        sets.append(p)
    out = parallel.sweep(g, dyn, parallel.stack_params(sets), x, mesh=parallel.sweep_mesh(), record=["lif"])
    assert out["lif"].shape == (4,) + np.shape(want["lif"])
    counts = []
    for i, p in enumerate(sets):
        ref = one.run(p, x, record=["lif"])[0]
        same(out["lif"][i], ref["lif"], f"sweep set {i} spikes", spikes=True)
        same(out["output"][i], ref["output"], f"sweep set {i} output")
        counts.append(int(np.asarray(ref["lif"]).sum()))
    assert len(set(counts)) == 4, counts  # the sets really differ
    print("OK")
""")

_WORKER = _SETUP + textwrap.dedent("""
    port, pid = sys.argv[1], int(sys.argv[2])
    from nirbridge import parallel
    parallel.initialize(f"127.0.0.1:{port}", 2, pid, timeout=120, heartbeat_timeout_seconds=60,
                        shutdown_timeout_seconds=60)
    import jax, jax.numpy as jnp
    assert jax.process_count() == 2 and len(jax.devices()) == 2

    g, x, dyn = make()
    rec = ["lif", ("lif", "v")]
    one = nb.to_jax(g, dyn)  # this process alone, the whole batch: the oracle
    want, _ = one.run(one.params, x, record=rec)

    half = x.shape[1] // 2
    local = x[:, pid * half:(pid + 1) * half]  # this process's rows only
    many = nb.to_jax(g, dyn, devices=jax.devices())
    got, _ = many.run(many.params, local, record=rec)
    got = parallel.gather(got)
    same(got["lif"], want["lif"], "2 processes spikes", spikes=True)
    same(got[("lif", "v")], want[("lif", "v")], "2 processes voltage")
    same(got["output"], want["output"], "2 processes output")

    def loss(m):
        return lambda p, xs: jnp.mean(m.run(p, xs)[0]["output"] ** 2)
    g1 = jax.grad(loss(one))(one.params, x)
    # a global array is an argument of the compiled function, never a constant closed over
    xs = parallel.place_batch(local, many.sharding)
    g2 = parallel.gather(jax.jit(jax.grad(loss(many)))(many.params, xs))
    for node in g1:
        for f in g1[node]:
            a, b = np.asarray(g2[node][f]), np.asarray(g1[node][f])
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(b).max() + 1e-30),
                                       err_msg=f"grad {node}.{f}")
    print("OK", pid, flush=True)
""")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES") and "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def test_four_forced_host_devices_equal_one_device(tmp_path):
    script = tmp_path / "devices.py"
    script.write_text(_DEVICES)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout[-3000:] + res.stderr[-6000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_jax_distributed_equal_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    port = _free_port()
    procs, logs = [], []
    try:
        for pid in range(2):  # output to files, not pipes: a full pipe can block a worker
            log = open(tmp_path / f"worker{pid}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, str(script), str(port), str(pid)], stdout=log,
                                          stderr=subprocess.STDOUT, env=_env()))
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: stop waiting for the others
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        for log in logs:
            log.close()
    texts = [(tmp_path / f"worker{pid}.log").read_text() for pid in range(2)]
    for pid, (p, text) in enumerate(zip(procs, texts)):
        assert p.returncode == 0 and f"OK {pid}" in text, f"worker {pid} (rc {p.returncode}):\n{text[-4000:]}"


def test_a_sweep_on_one_device_equals_a_loop_over_the_sets():
    import jax
    import numpy as np

    ns: dict = {}
    exec(_SETUP, ns)
    g, x, dyn = ns["make"](seed=2)
    x = x[:20, :8]
    import nirbridge as nb
    from nirbridge import parallel

    one = nb.to_jax(g, dyn)
    sets = []
    for s in (0.5, 1.0, 1.5):
        p = jax.tree.map(lambda a: a, one.params)
        p["fc"] = {**p["fc"], "weight": p["fc"]["weight"] * s}
        sets.append(p)
    out = parallel.sweep(g, dyn, parallel.stack_params(sets), x, record=["lif"])
    counts = []
    for i, p in enumerate(sets):
        ref = nb.simulate(nb.from_jax(one, p), x, dyn, backend="reference", record=["lif"])
        np.testing.assert_array_equal(out["lif"][i], ref["lif"])
        np.testing.assert_allclose(out["output"][i], ref["output"], rtol=1e-5, atol=1e-5)
        counts.append(int(ref["lif"].sum()))
    assert len(set(counts)) == 3, counts


def test_bad_sharding_arguments_say_what_to_do():
    import jax
    import numpy as np

    from nirbridge import parallel
    from nirbridge.errors import InputError

    with pytest.raises(InputError, match="devices"):
        parallel.batch_sharding(["cpu0"])
    with pytest.raises(InputError, match="no parameter sets"):
        parallel.stack_params([])
    with pytest.raises(InputError, match="host:port"):
        parallel.initialize("localhost", 2, 0)
    import nirbridge as nb

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    ns: dict = {}
    exec(_SETUP, ns)
    g, x, dyn = ns["make"]()
    stacked = parallel.stack_params([nb.to_jax(g, dyn).params])
    with pytest.raises(InputError, match="no 'sweep'"):
        parallel.sweep(g, dyn, stacked, x[:5, :4], mesh=mesh)


def test_the_persistent_cache_stores_compiled_programs_on_disk(tmp_path):
    cache = tmp_path / "cache"
    code = _SETUP + textwrap.dedent(f"""
        import jax.monitoring
        from nirbridge.backends.jax import use_persistent_cache
        hits = []
        jax.monitoring.register_event_listener(
            lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
        use_persistent_cache({str(cache)!r})
        g, x, dyn = make()
        nb.simulate(g, x[:10, :4], dyn, backend="jax")
        print("HITS", len(hits))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr[-4000:]
    stored = [p for p in cache.rglob("*") if p.is_file()]
    assert stored, "no compiled program was written to the cache directory"
    assert "HITS 0" in res.stdout, res.stdout
    # a second process loads them instead of compiling: cache hits, and no new entry
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr[-4000:]
    assert "HITS 0" not in res.stdout and "HITS" in res.stdout, res.stdout
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == sorted(p.name for p in stored)
