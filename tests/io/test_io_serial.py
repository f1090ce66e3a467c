"""Serial tests of hpcml.io: checksum, XDMF, analyze, progress, layout (one process)."""

from __future__ import annotations

import io
import json
import logging
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from io_helpers import field_value, global_value
from mpi4py import MPI

from hpcml import CartDecomp, DistArray
from hpcml.io import Output, OutputError, choose_driver, consolidate, h5py_has_mpi, read
from hpcml.io._common import checksum, checksum_combine, checksum_partial
from hpcml.io.layout import check_name
from hpcml.io.progress import Progress

# -- checksum ------------------------------------------------------------------------------


@settings(max_examples=40, derandomize=True, database=None, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
    dtype=st.sampled_from(["f8", "f4", "i2", "c16", "u1"]),
    data=st.data(),
)
def test_checksum_is_the_same_for_any_tiling(shape, dtype, data):
    rng = np.random.default_rng(sum(shape))
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    # Random cut points per axis: the blocks of a block decomposition.
    parts = []
    cuts = []
    for n in shape:
        inner = data.draw(st.lists(st.integers(1, max(1, n - 1)), max_size=2, unique=True)) if n > 1 else []
        cuts.append([0, *sorted(c for c in inner if 0 < c < n), n])
    for idx in np.ndindex(*[len(c) - 1 for c in cuts]):
        start = [cuts[d][i] for d, i in enumerate(idx)]
        stop = [cuts[d][i + 1] for d, i in enumerate(idx)]
        block = a[tuple(slice(s, e) for s, e in zip(start, stop))]  # a strided view
        parts.append(checksum_partial(block, start, shape))
    assert checksum_combine(parts) == checksum(a)


def test_checksum_detects_any_flipped_byte_and_swaps():
    a = np.arange(64, dtype="f8").reshape(8, 8)
    ref = checksum(a)
    raw = a.view(np.uint8).reshape(-1)
    for pos in range(raw.size):
        for bit in (0, 7):
            b = raw.copy()
            b[pos] ^= 1 << bit
            assert checksum(b.view("f8").reshape(8, 8)) != ref, (pos, bit)
    b = a.copy()
    b[0, 0], b[3, 5] = b[3, 5], b[0, 0]
    assert checksum(b) != ref
    # Long rows take the segmented path (rows over 1 MiB): still exact.
    big = np.random.default_rng(0).random((2, 300_000))
    assert checksum_combine(
        [
            checksum_partial(big[:, :100_000], (0, 0), big.shape),
            checksum_partial(big[:, 100_000:], (0, 100_000), big.shape),
        ]
    ) == checksum(big)


# -- output written in this process (one rank) ---------------------------------------------------


@pytest.fixture
def run_file(tmp_path):
    """A 1-rank output: 2-D field u, 3-D field w, a signed (lat, lon) field br, scalars, a profile series."""
    comm = MPI.COMM_WORLD
    path = tmp_path / "run.h5"
    d2 = CartDecomp((12, 10), comm)
    d3 = CartDecomp((4, 5, 6), comm)
    dbr = CartDecomp((9, 16), comm, periodic=(False, True))
    lat = np.linspace(80, -80, 9)  # north first, as a colatitude grid stores it
    lon = np.arange(16) * 22.5
    geo = {"lat": (lat, {"units": "degrees_north", "axis": "Y"}), "lon": (lon, {"units": "degrees_east", "axis": "X"})}
    cube = {
        n: (np.arange(k) * 0.5, {"axis": a, "units": "m"}) for n, k, a in (("k", 4, "Z"), ("j", 5, "Y"), ("i", 6, "X"))
    }
    with Output(path, comm, config="[grid]\nn = 12\n", mode="w", time_units="s") as out:
        for step in range(4):
            t = 0.25 * step
            u = DistArray.from_global(d2, field_value((12, 10), step))
            out.write("u", u, step=step, time=t, units="K", coords={"x": (np.arange(10) * 0.5, {"units": "m"})})
            w = DistArray.from_global(d3, field_value((4, 5, 6), step))
            out.write("w", w, step=step, time=t, dims=("k", "j", "i"), coords=cube)
            br = DistArray.from_global(dbr, lambda i, j, s=step: np.sin(np.radians(lat[i])) * np.cos(s + 0 * j))
            out.write("br", br, step=step, time=t, units="G", dims=("lat", "lon"), coords=geo)
            out.write_scalar("total_flux", 1e3 * 10.0**-step, step=step, time=t, units="Mx")
            out.write_scalar("flat", 0.0, step=step, time=t)
            out.write_scalar("butterfly", np.sin(np.radians(lat)) * np.cos(step), step=step, time=t, dims=("lat",))
    return path


def test_xdmf_parses_and_references_existing_datasets(run_file):
    xmf = run_file.with_suffix(".xmf")
    root = ET.parse(xmf).getroot()
    assert root.tag == "Xdmf"
    seen = set()
    with h5py.File(run_file) as f:
        for coll in root.iter("Grid"):
            if coll.get("CollectionType") != "Temporal":
                continue
            grids = coll.findall("Grid")
            assert len(grids) == 4
            times = [float(g.find("Time").get("Value")) for g in grids]
            assert times == [0.0, 0.25, 0.5, 0.75]
            for i, grid in enumerate(grids):
                topo = grid.find("Topology")
                for attr in grid.findall("Attribute"):
                    slab, src = attr.find("DataItem").findall("DataItem")
                    fname, dset = src.text.split(":")
                    assert fname == run_file.name
                    seen.add(dset)
                    ds = f[dset]
                    assert src.get("Dimensions") == " ".join(map(str, ds.shape))
                    want = ds.shape[1:] if ds.ndim == 4 else (1, *ds.shape[1:])  # 2-D fields are one layer
                    assert topo.get("Dimensions") == " ".join(map(str, want))
                    assert int(slab.text.split()[0]) == i < ds.shape[0]
    assert seen == {"/u", "/w", "/br"}  # 2-D and 3-D fields; scalar series are not grids


def test_read_and_consolidate_in_process(run_file):
    d = CartDecomp((12, 10), MPI.COMM_WORLD)
    u = read(run_file, "u", d, step=2)
    np.testing.assert_array_equal(u.interior, global_value((12, 10), 2))
    consolidate(run_file)
    assert not run_file.with_name("run.d").exists()
    with h5py.File(run_file) as f:
        assert not f["u"].is_virtual and f.attrs["writer"] == "consolidated"
        np.testing.assert_array_equal(f["u"][3], global_value((12, 10), 3))
        assert f["u"].attrs["units"] == "K" and list(f["step"][...]) == [0, 1, 2, 3]
    np.testing.assert_array_equal(read(run_file, "u", d, step=2).interior, global_value((12, 10), 2))


def test_analyze_writes_pngs_and_json(run_file, tmp_path, capsys):
    from hpcml.io import analyze

    parser = __import__("argparse").ArgumentParser()
    analyze.add_arguments(parser)
    outdir = tmp_path / "plots"
    assert analyze.run(parser.parse_args([str(run_file), "--out", str(outdir), "--json"])) == 0
    summary = json.loads(capsys.readouterr().out)
    names = {p.split("/")[-1] for p in summary["plots"]}
    # One figure for the 0-D series; the profile series is drawn as a diagram, not as lines.
    assert names == {"run-u.png", "run-w.png", "run-br.png", "run-series.png", "run-butterfly.png"}
    assert summary["constant"] == ["flat"]  # listed, not drawn
    for p in summary["plots"]:
        data = open(p, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    by_name = {v["name"]: v for v in summary["variables"]}
    assert by_name["u"]["entries"] == 4 and by_name["u"]["units"] == "K" and by_name["u"]["steps"] == [0, 3]
    assert by_name["u"]["dims"] == ["time", "y", "x"] and by_name["total_flux"]["time"] == [0.0, 0.75]
    assert summary["config"].startswith("[grid]")
    # Default: the figures go next to the file.
    assert analyze.run(parser.parse_args([str(run_file)])) == 0
    assert (run_file.parent / "run-u.png").is_file()
    text = capsys.readouterr().out
    assert "u" in text and "steps 0..3" in text and "writer" in text
    assert analyze.run(parser.parse_args([str(tmp_path / "missing.h5")])) == 2


def test_figures_are_labelled_north_up_and_symmetric(run_file, tmp_path):
    """Inspect the matplotlib objects: axis labels with units, north up, colour limits symmetric about 0."""
    from hpcml.io import analyze

    plt = analyze._pyplot()
    info = analyze.inspect_file(run_file)
    with h5py.File(run_file) as f:
        ctx = analyze.PlotContext(run_file, f, info, tmp_path, plt)
        fig, ax = plt.subplots()
        data = f["br"][-1]
        mesh = analyze.draw_map(ctx, ax, data, "lon", "lat", "br")
        assert ax.get_xlabel() == "lon [degrees_east]" and ax.get_ylabel() == "lat [degrees_north]"
        lo, hi = mesh.get_clim()
        assert lo == -hi and hi > 0 and mesh.get_cmap().name == "RdBu_r"
        y0, y1 = ax.get_ylim()
        assert y1 > y0  # latitude grows upwards although the rows run north to south
        # The row drawn at the top holds the northernmost data (80 N): sin(80 deg) cos(3) < 0 there.
        coords = mesh.get_coordinates()
        top = np.argmax(coords[:, 0, 1])
        assert coords[top, 0, 1] > 75 and np.sign(mesh.get_array().reshape(data.shape)[min(top, 8), 0]) == np.sign(
            data[0, 0]
        )
        plt.close(fig)


def test_analyze_without_matplotlib_prints_the_summary_and_a_hint(run_file, capsys, monkeypatch):
    import builtins

    from hpcml.io import analyze

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    parser = __import__("argparse").ArgumentParser()
    analyze.add_arguments(parser)
    assert analyze.run(parser.parse_args([str(run_file)])) == 0
    out, err = capsys.readouterr()
    assert "pip install 'hpcml[plot]'" in err and "--no-plots" in err
    assert "variables:" in out and "total_flux" in out


# -- small pieces ------------------------------------------------------------------------------


def test_progress_bar_on_tty_and_lines_otherwise(caplog):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    with Progress(100, "copy", stream=tty, delay=0.0, enabled=True) as bar:
        for _ in range(4):
            bar.update(25)
    out = tty.getvalue()
    assert "\r[" in out and "100%" in out and out.endswith("\n")
    with caplog.at_level(logging.INFO, logger="hpcml.io"):
        with Progress(10, "read", unit="snapshots", stream=io.StringIO(), delay=0.0, interval=0.0, enabled=True) as b:
            b.update(5)
            b.update(5)
    assert any("read: 10/10 (100%)" in r.getMessage() for r in caplog.records)
    quiet = io.StringIO()
    with Progress(10, "x", stream=quiet, enabled=False) as b:
        b.update(10)
    assert quiet.getvalue() == ""


def test_names_and_driver_choice(monkeypatch):
    for bad in ("", "a/b", ".", ".."):
        with pytest.raises(ValueError):
            check_name(bad)
    assert check_name("u") == "u"
    assert choose_driver("vds") == "vds"
    assert choose_driver() == ("mpio" if h5py_has_mpi() else "vds")
    from hpcml.settings import rc

    monkeypatch.setattr(rc, "io_driver", "vds")  # what HPCML_IO_DRIVER=vds sets
    assert choose_driver() == "vds"
    if not h5py_has_mpi():
        with pytest.raises(OutputError, match="parallel HDF5"):
            choose_driver("mpio")


def test_append_to_foreign_or_broken_file_is_refused(tmp_path):
    comm = MPI.COMM_WORLD
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(OutputError, match="not an hpcml output of this version"):
        Output(foreign, comm)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"garbage")
    with pytest.raises(OutputError, match=r"broken\.h5"):
        Output(broken, comm)
    Output(broken, comm, mode="w").close()  # "w" starts over


def test_hpcml_analyze_command(run_file, tmp_path):
    """The CLI entry point (``hpcml analyze``) end to end, in a separate process."""
    import subprocess
    import sys

    out = tmp_path / "cli-plots"
    proc = subprocess.run(
        [sys.executable, "-m", "hpcml.cli", "analyze", str(run_file), "--json", "--outdir", str(out)],  # old spelling
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    plots = json.loads(proc.stdout)["plots"]
    assert plots and all((out / p.split("/")[-1]).stat().st_size > 1000 for p in plots)


def test_append_keeps_user_attributes(run_file):
    comm = MPI.COMM_WORLD
    d = CartDecomp((9, 16), comm, periodic=(False, True))
    with Output(run_file, comm) as out:  # mode="a"
        out.write("br", DistArray.zeros(d), step=4, time=1.0, dims=("lat", "lon"))
    with h5py.File(run_file) as f:
        assert f["br"].shape[0] == 5 and f["br"].attrs["units"] == "G" and f["u"].shape[0] == 5
        assert np.isnan(f["u"][4]).all() and f["u"].attrs["units"] == "K"  # u skipped the new entry
        np.testing.assert_allclose(f["lat"][...], np.linspace(80, -80, 9))
        assert f["lat"].attrs["units"] == "degrees_north" and f["time"].attrs["units"] == "s"
        assert len(json.loads(f.attrs["hpcml_provenance"])) == 2 and len(f.attrs["history"].splitlines()) == 2


@pytest.mark.parametrize(("saved", "loaded"), [(2, 1), (1, 3), (2, 2), (0, 1)])
def test_checkpoint_halo_width_may_change(tmp_path, saved, loaded):
    from hpcml.io import checkpoint

    comm = MPI.COMM_WORLD
    shape = (6, 7)
    d = CartDecomp(shape, comm, halo=saved)
    u = DistArray.full(d, -5.0)  # outer frame: -5 (boundary values kept in ghosts)
    u.interior[...] = global_value(shape, 2)
    checkpoint.save(tmp_path, {"u": u}, step=2)
    d2 = CartDecomp(shape, comm, halo=loaded)
    r = checkpoint.load(tmp_path, {"u": d2})
    v = r["u"]
    np.testing.assert_array_equal(v.interior, global_value(shape, 2))
    w = min(saved, loaded)
    frame = np.zeros(d2.ghosted_shape)  # what the frame must hold: -5 up to the saved width, 0 beyond
    inner = tuple(slice(loaded - w, loaded + n + w) for n in shape)
    frame[inner] = -5.0
    frame[d2.interior] = global_value(shape, 2)
    np.testing.assert_array_equal(v.data, frame)
