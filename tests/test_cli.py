"""The ``nirbridge`` command, through ``main([...])`` and once through ``python -m nirbridge``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from cases import recurrent_case
from test_compare import add_from, register

import nirbridge as nb
from nirbridge import examples
from nirbridge.cli import main
from nirbridge.testing import random_spikes

BRAILLE = str(examples.path("braille_noDelay_bias_zero"))
HAVE_JAX_TORCH = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def rec_file(tmp_path_factory):
    g, x, dt = recurrent_case()
    d = tmp_path_factory.mktemp("cli")
    nb.save(g, d / "rec.nir")
    np.save(d / "x.npy", x)
    return d / "rec.nir", d / "x.npy", g, x, dt


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nirbridge: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_info(capsys):
    code, out, err = run(capsys, "info", BRAILLE)
    assert code == 0 and err == ""
    assert "lif1.lif    CubaLIF  38     38" in out
    assert "inputs: input (12,)" in out and "outputs: output (7,)" in out
    assert "spiking nodes: lif1.lif, lif2" in out
    assert "recurrent edges: lif1.w_rec -> lif1.lif" in out


def test_python_m_nirbridge_info():
    p = subprocess.run([sys.executable, "-m", "nirbridge", "info", BRAILLE], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert "2564 parameters" in p.stdout
    p = subprocess.run([sys.executable, "-m", "nirbridge", "info", "no_such_file.nir"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and "no_such_file.nir" in one_error_line(p.stderr)


def test_simulate_random_spikes_matches_the_library(capsys, tmp_path):
    out_file = tmp_path / "out.npz"
    code, out, err = run(capsys, "simulate", BRAILLE, "--random-spikes", "30,3,0.2", "--seed", "4", "--dt", "1e-4",
                         "--synapse", "current_first", "--reset", "subtract", "--out", out_file,
                         "--record", "fc1", "lif1.lif:v")
    assert code == 0, err
    assert f"wrote {out_file}" in out
    g = nb.load(BRAILLE)
    dyn = nb.Dynamics(dt=1e-4, synapse="current_first", reset="subtract")
    want = nb.simulate(g, random_spikes(g, 30, 3, 0.2, seed=4), dyn, record=["fc1", ("lif1.lif", "v")])
    with np.load(out_file) as f:
        assert sorted(f.files) == ["fc1", "lif1.lif:v", "output"]
        for k, v in want.items():
            name = k if isinstance(k, str) else ":".join(k)
            np.testing.assert_array_equal(f[name], v)  # same backend, same input: bit for bit


def test_simulate_input_file_and_record_all(capsys, rec_file, tmp_path):
    path, xfile, g, x, dt = rec_file
    out_file = tmp_path / "traces"  # no suffix: written exactly there
    code, out, err = run(capsys, "simulate", path, "--input", xfile, "--dt", dt, "--out", out_file,
                         "--record", "all", "--dtype", "float64")
    assert code == 0, err
    want = nb.simulate(g, x, nb.Dynamics(dt=dt), record="all", dtype="float64")
    with np.load(out_file) as f:
        assert len(f.files) == len(want)
        np.testing.assert_array_equal(f["delay:buffer"], want[("delay", "buffer")])
        np.testing.assert_array_equal(f["output"], want["output"])
    # an .npz keyed by input name works too
    np.savez(tmp_path / "x.npz", input=x)
    assert run(capsys, "simulate", path, "--input", tmp_path / "x.npz", "--dt", dt, "--out", out_file)[0] == 0


def test_simulate_progress_bar(capsys, rec_file, tmp_path):
    path, xfile, g, x, dt = rec_file
    code, out, err = run(capsys, "simulate", path, "--input", xfile, "--dt", dt, "--out", tmp_path / "o.npz",
                         "--progress")
    assert code == 0 and "simulate (reference)" in err and "60/60" in err  # tqdm, on stderr
    code, out, err = run(capsys, "simulate", path, "--input", xfile, "--dt", dt, "--out", tmp_path / "o.npz")
    assert code == 0 and err == ""  # short runs (and runs outside a terminal): no bar


@pytest.mark.parametrize("argv, needle", [
    (["simulate", "{rec}", "--random-spikes", "10,2", "--dt", "1e-3", "--out", "{tmp}/o.npz"], "T,B,p"),
    (["simulate", "{rec}", "--random-spikes", "10,2,0.1", "--out", "{tmp}/o.npz"], "--dt is required"),
    (["simulate", "{rec}", "--random-spikes", "10,2,0.1", "--dt", "-1", "--out", "{tmp}/o.npz"], "dt"),
    (["simulate", "{rec}", "--random-spikes", "10,2,0.1", "--dt", "1e-3", "--out", "{tmp}/o.npz",
      "--backend", "nope"], "unknown backend 'nope'"),
    (["simulate", "{rec}", "--random-spikes", "10,2,0.1", "--dt", "1e-3", "--out", "{tmp}/o.npz",
      "--record", "nonode"], "nonode"),
    (["simulate", "{rec}", "--input", "{tmp}/bad.npy", "--dt", "1e-3", "--out", "{tmp}/o.npz"], "bad.npy"),
    (["simulate", "{rec}", "--input", "{tmp}/wrong_shape.npy", "--dt", "1e-3", "--out", "{tmp}/o.npz"],
     "expected (T, B, 4)"),
    (["simulate", "{rec}", "--input", "{tmp}/missing.npy", "--dt", "1e-3", "--out", "{tmp}/o.npz"], "missing.npy"),
    (["simulate", "{rec}", "--random-spikes", "10,2,0.1", "--dt", "1e-3", "--out", "{tmp}/no_dir/o.npz"],
     "no_dir"),
    (["simulate", "{rec}", "--random-spikes", "10,2,0.1", "--dt", "1.5e-3", "--out", "{tmp}/o.npz"], "delay"),
    (["info", "{tmp}/garbage.nir"], "garbage.nir"),
    (["info", "{tmp}"], "is not a file"),
    (["check", "{rec}", "--dt", "1e-3", "--backends", "reference,nope"], "unknown backends"),
    (["check", "{rec}", "--dt", "1e-3", "--random-spikes", "10,2,3"], "p=3.0"),
    (["simulate", "{rec}", "--dt", "1e-3"], "required"),
    (["frobnicate"], "invalid choice"),
    (["plot", "{rec}", "--dt", "1e-3", "--backends", "reference", "--out", "{tmp}/p.png", "--trace", "fc_in"],
     "no state"),
])
def test_errors_are_one_line_with_exit_code_2(capsys, rec_file, tmp_path, argv, needle):
    (tmp_path / "bad.npy").write_bytes(b"this is not numpy")
    (tmp_path / "garbage.nir").write_bytes(b"\x89HDF\r\n garbage")
    np.save(tmp_path / "wrong_shape.npy", np.zeros((5, 2, 3)))
    argv = [a.format(rec=rec_file[0], tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in one_error_line(err)


def test_no_command_prints_help(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "usage: nirbridge" in out


def test_check_agreement_and_disagreement(capsys, rec_file):
    path, xfile, g, x, dt = rec_file
    register("copy")
    register("perturbed", node="fc_in", change=add_from(7, 1e-3))
    code, out, err = run(capsys, "check", path, "--dt", dt, "--input", xfile, "--backends", "reference,copy")
    assert code == 0, out + err
    assert "OK: reference, copy agree on every recorded value" in out
    code, out, err = run(capsys, "check", path, "--dt", dt, "--input", xfile, "--backends", "reference,perturbed")
    assert code == 1 and err == ""
    assert "perturbed first diverges at step 7, node 'fc_in' output" in out
    assert "first at step 7, node 'fc_in'" in out
    # a tolerance wider than the perturbation accepts it
    code, out, _ = run(capsys, "check", path, "--dt", dt, "--input", xfile, "--backends", "reference,perturbed",
                       "--atol", "2e-3")
    assert code == 0, out


def test_check_with_a_single_backend_proves_nothing(capsys, rec_file):
    path, xfile, g, x, dt = rec_file
    code, out, _ = run(capsys, "check", path, "--dt", dt, "--backends", "reference")
    assert code == 1 and "NOT CHECKED" in out


def test_plot_writes_a_png(capsys, rec_file, tmp_path):
    path, xfile, g, x, dt = rec_file
    register("copy")
    png = tmp_path / "raster.png"
    code, out, err = run(capsys, "plot", path, "--dt", dt, "--input", xfile, "--backends", "reference,copy",
                         "--out", png)
    assert code == 0, err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # two raster panels and the voltage traces, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height > 300


def test_plot_without_matplotlib_says_what_to_install(capsys, rec_file, tmp_path, monkeypatch):
    path, xfile, g, x, dt = rec_file
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code, out, err = run(capsys, "plot", path, "--dt", dt, "--backends", "reference", "--out", tmp_path / "p.png")
    assert code == 2
    assert 'pip install "nirbridge[cli]"' in one_error_line(err)


@pytest.mark.skipif(not HAVE_JAX_TORCH, reason="the demo compares jax and torch")
def test_demo(capsys):
    code, out, err = run(capsys, "demo", "--steps", "40", "--batch", "2", "--repeat", "1")
    assert code == 0, out + err
    assert "7 nodes, 2564 parameters" in out
    assert "OK: reference, jax, torch agree on every recorded value" in out
    for b in ("reference", "jax", "torch"):
        assert any(line.strip().startswith(b) and "steps/s" in line for line in out.splitlines()), b


# ---------------------------------------------------------------------- every Dynamics field, libraries
def test_examples_by_name(capsys):
    code, out, err = run(capsys, "info", "braille")
    assert code == 0 and "2564 parameters" in out
    code, out, err = run(capsys, "info", "no_such_example")
    line = one_error_line(err)
    assert code == 2 and "braille_noDelay_bias_zero" in line and "lif_norse" in line


def test_every_dynamics_field_has_a_flag(capsys, rec_file, tmp_path):
    path, xfile, g, x, dt = rec_file
    flags = ["--dt", dt, "--method", "exact", "--reset", "subtract", "--threshold", ">=", "--synapse",
             "current_first", "--reset-timing", "late", "--voltage", "pre", "--spikes", "count", "--v-init",
             "v_leak", "--recurrent-start", "rest", "--input-gain", "unit", "--surrogate", "sigmoid",
             "--surrogate-slope", "5", "--output-delay", "1", "--by-type", "LIF:reset_timing=same"]
    want = nb.Dynamics(dt=dt, method="exact", reset="subtract", threshold=">=", synapse="current_first",
                       reset_timing="late", voltage="pre", spikes="count", v_init="v_leak", recurrent_start="rest",
                       input_gain="unit", surrogate="sigmoid", surrogate_slope=5.0, output_delay=1,
                       by_type={"LIF": {"reset_timing": "same"}})
    out_file = tmp_path / "o.npz"
    code, out, err = run(capsys, "simulate", path, "--input", xfile, "--out", out_file, *flags)
    assert code == 0, err
    assert repr(want) in out
    np.testing.assert_array_equal(np.load(out_file)["output"], nb.simulate(g, x, want)["output"])


def test_by_node_flag_and_unknown_node(capsys, rec_file, tmp_path):
    path, xfile, g, x, dt = rec_file
    node = next(s.name for s in g.plan.steps if s.node.type in ("LIF", "CubaLIF"))
    out_file = tmp_path / "o.npz"
    code, out, err = run(capsys, "simulate", path, "--input", xfile, "--out", out_file, "--dt", dt,
                         "--by-node", f"{node}:reset=subtract")
    assert code == 0, err
    want = nb.simulate(g, x, nb.Dynamics(dt=dt, by_node={node: {"reset": "subtract"}}))["output"]
    np.testing.assert_array_equal(np.load(out_file)["output"], want)
    code, out, err = run(capsys, "check", path, "--input", xfile, "--dt", dt, "--by-node", "nope:reset=zero")
    line = one_error_line(err)
    assert code == 2 and "'nope'" in line and node in line


@pytest.mark.parametrize("argv, words", [
    (["--dt", "1e-4", "--option", "reset_mechanism=zero"], "needs --library"),
    (["--library", "snntorch", "--preset", "snntorch"], "both given"),
    (["--library", "snntorch", "--option", "reset_mechanism"], "is not [NODE:]KEY=VALUE"),
    (["--library", "snntorch", "--option", "reset_mech=zero"], "reset_delay"),
    (["--dt", "1e-4", "--export-dt", "1e-3"], "--library norse"),
    (["--dt", "1e-4", "--by-node", "reset=zero"], "NAME:KEY=VALUE"),
])
def test_library_flag_errors_read_as_shell(capsys, argv, words):
    code, out, err = run(capsys, "check", BRAILLE, "--random-spikes", "5,1,0.1", *argv)
    assert code == 2 and words in one_error_line(err)


def test_preset_warning_names_the_flags(capsys, tmp_path):
    sim = ("simulate", BRAILLE, "--random-spikes", "5,1,0.1", "--out", tmp_path / "o.npz")
    code, out, err = run(capsys, *sim, "--preset", "snntorch")
    assert code == 0
    assert "nirbridge: warning:" in err and "--library snntorch --option reset_mechanism=zero" in err
    code, out, err = run(capsys, *sim, "--library", "snntorch", "--option", "reset_mechanism=subtract")
    assert code == 0 and err == ""


def test_export_writes_a_file_for_the_importer_and_errors_name_the_setting(capsys, tmp_path):
    """``nirbridge export``: the Norse paper file under the Norse preset, written for Norse's importer
    at dt = 1e-4 (tau rescaled, r folded into the Affine): the written file under the importer's
    Dynamics gives the source's spikes; a target that cannot express the model is one error line."""
    out = tmp_path / "for_norse.nir"
    code, text, err = run(capsys, "export", "lif_norse", "--preset", "norse", "--to", "norse", "--target-dt", "1e-4",
                          "--out", out)
    assert code == 0, err
    assert f"wrote {out}" in text and "nirbridge: warning:" in err and "rewritten for Norse" in err
    src = nb.load(examples.path("lif_norse"))
    written = nb.load(out)
    x = random_spikes(src, T=200, B=2, p=0.3, seed=0)
    want = nb.simulate(src, x, nb.Dynamics.preset("norse"), dtype="float64")["output"]
    got = nb.simulate(written, x, nb.Dynamics(**dict(nb.presets.IMPORTERS["norse"]["dynamics"], dt=1e-4)),
                      dtype="float64")["output"]
    assert want.sum() > 5
    np.testing.assert_array_equal(got, want)
    code, text, err = run(capsys, "export", "lif_norse", "--preset", "norse", "--to", "sinabs", "--out", out)
    assert code == 2 and "field 'method'" in one_error_line(err)
    code, text, err = run(capsys, "export", "lif_norse", "--preset", "norse", "--to", "brian2", "--out", out)
    assert code == 2 and "spikingjelly" in one_error_line(err)
