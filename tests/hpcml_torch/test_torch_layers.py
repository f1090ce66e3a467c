"""hpcml.torch modules against single-process torch on the gathered field: forward, input and weight gradients.

Every case runs on every ``data x spatial`` grid of the rank count (1-4 ranks in CI, uneven
splits from the drawn shapes): each replica takes its share of the batch, each rank its tile;
outputs and input gradients must equal the tiles of torch's result on the whole field, and the
weight gradients summed over the tiles must equal torch's, to 1e-12 in float64.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mpi4py import MPI  # noqa: E402
from torch_helpers import close, grids, ref_conv, ref_pool, share, tile  # noqa: E402

import hpcml.torch as ht  # noqa: E402
from hpcml.testing import assert_all  # noqa: E402

CONVS = {1: ht.HaloConv1d, 2: ht.HaloConv2d, 3: ht.HaloConv3d}
POOLS = {
    ("max", 1): ht.HaloMaxPool1d,
    ("max", 2): ht.HaloMaxPool2d,
    ("max", 3): ht.HaloMaxPool3d,
    ("avg", 1): ht.HaloAvgPool1d,
    ("avg", 2): ht.HaloAvgPool2d,
    ("avg", 3): ht.HaloAvgPool3d,
}
# (kernel, stride, padding, dilation): every pool whose output is field / stride
POOL_CASES = [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (4, 2, 1, 1), (3, 3, 0, 1), (2, 2, 1, 2), (5, 1, 2, 1)]


def _spatial_sum(grid, t):
    return torch.from_numpy(grid.spatial_comm.allreduce(t.detach().numpy()))


def _random(shape, seed):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _run_case(comm, make, reference, shape, periodic, cin, stride=(1, 1, 1), nsamples=5, seed=0):
    """Build the module on every grid, compare forward/backward with ``reference(module, X)``."""
    for data in grids(comm.size):
        grid = ht.TrainGrid(comm, data, shape, periodic=periodic)
        try:
            torch.manual_seed(seed)
            mod = make(grid)
            x_all = _random((nsamples, cin, *shape), seed + 1)
            mine = share(grid, nsamples)
            x = tile(grid, x_all[mine]).requires_grad_(True)
            y = mod(x)
            params = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]
            xr = x_all[mine].clone().requires_grad_(True)
            yr = reference(mod, params, xr)
            gy = _random(yr.shape, seed + 2)
            (y * tile(grid, gy, stride)).sum().backward()
            (yr * gy).sum().backward()
            ok = close(y.detach(), tile(grid, yr.detach(), stride))
            ok &= close(x.grad, tile(grid, xr.grad))
            for p, pr in zip(mod.parameters(), params):
                ok &= close(_spatial_sum(grid, p.grad), pr.grad, 1e-11)
            assert_all(comm, ok, f"{mod} on grid {grid} differs from torch on the whole field")
        finally:
            grid.free()


def _conv_ref(mod, params, x):
    w, b = params if len(params) == 2 else (params[0], None)
    shadow = type(
        "Shadow", (), {"weight": w, "bias": b, "stride": mod.stride, "dilation": mod.dilation, "groups": mod.groups}
    )
    return ref_conv(shadow, x, mod.halo, mod.periodic)


@pytest.mark.mpi
@settings(max_examples=12)
@given(data=st.data())
def test_halo_conv_matches_torch_on_every_grid(comm, data):
    nd = data.draw(st.integers(1, 3), label="ndim")
    k = data.draw(st.sampled_from([1, 3, 5]), label="kernel")
    dil = data.draw(st.integers(1, 2), label="dilation")
    h = dil * (k - 1) // 2
    periodic = tuple(data.draw(st.booleans()) for _ in range(nd))
    p = comm.size
    shape = tuple(data.draw(st.integers(p * max(h, 1), p * max(h, 1) + (4 if nd < 3 else 2))) for _ in range(nd))
    cin, cout = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    groups = data.draw(st.sampled_from([1, cin])) if cin == cout else 1
    bias = data.draw(st.booleans())
    _run_case(
        comm,
        lambda g: CONVS[nd](
            g, cin, cout, k, dilation=dil, groups=groups, bias=bias, padding_mode=periodic, dtype=torch.float64
        ),
        _conv_ref,
        shape,
        periodic,
        cin,
    )


@pytest.mark.mpi
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_strided_conv_matches_torch(comm, nd):
    """Stride 2 with tiles of even extent: output tiles are the strided field's tiles."""
    shape = tuple(comm.size * 4 for _ in range(nd))
    _run_case(
        comm,
        lambda g: CONVS[nd](g, 2, 2, 3, stride=2, padding_mode="circular", dtype=torch.float64),
        _conv_ref,
        shape,
        (True,) * nd,
        2,
        stride=(2,) * nd,
    )


@pytest.mark.mpi
@settings(max_examples=16)
@given(data=st.data())
def test_halo_pools_match_torch_on_every_grid(comm, data):
    kind = data.draw(st.sampled_from(["max", "avg"]), label="kind")
    nd = data.draw(st.integers(1, 3), label="ndim")
    k, s, pad, dil = data.draw(st.sampled_from(POOL_CASES), label="pool")
    if kind == "avg" and dil > 1:
        dil = 1
        k, s, pad = 3, 2, 1
    periodic = tuple(data.draw(st.booleans()) for _ in range(nd))
    include = data.draw(st.booleans(), label="count_include_pad")
    p = comm.size
    m = data.draw(st.integers(1, 2 if nd < 3 else 1))
    if s == 1:  # any split
        shape = tuple(data.draw(st.integers(p * max(pad, k), p * max(pad, k) + 4)) for _ in range(nd))
    else:  # every tile a multiple of the stride
        shape = tuple(p * s * max(m, -(-k * dil // s)) for _ in range(nd))

    def make(g):
        kw = {"count_include_pad": include} if kind == "avg" else {"dilation": dil}
        return POOLS[(kind, nd)](g, k, s, pad, padding_mode=periodic, **kw)

    def reference(mod, params, x):
        return ref_pool(kind, x, mod.kernel_size, mod.stride, mod.padding, mod.dilation, periodic, include)

    _run_case(comm, make, reference, shape, periodic, 2, stride=(s,) * nd)


@pytest.mark.mpi
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("periodic", [(True, False), (False, True)])
def test_exchange_in_place_zero_copy(comm, layout, periodic):
    """The exchange fills the ghosted tensor's own storage: same data_ptr, ghosts equal the wrapped field."""
    dims = MPI.Compute_dims(comm.size, 2)
    shape = (3 * dims[0] + 1, 2 * dims[1] + 1)
    grid = ht.TrainGrid(comm, 1, shape, dims=dims, periodic=periodic)
    try:
        g = _random((2, 3, *shape), 5)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        x = tile(grid, g)
        xg = torch.nn.functional.pad(x, (2, 2, 1, 1), value=-7.0).contiguous(memory_format=fmt)
        ptr, version = xg.data_ptr(), xg._version
        out = ht.halo_exchange(xg, grid)
        ok = out is xg and xg.data_ptr() == ptr and xg._version > version
        ok &= xg.is_contiguous(memory_format=fmt)
        # expected: the field padded circularly on periodic axes, -7 beyond the open edges
        ref = ref_conv_pad(g, (1, 2), periodic, -7.0)
        d = grid.decomp
        box = tuple(slice(s, s + n + 2 * h) for s, n, h in zip(d.start, d.local_shape, (1, 2)))
        ok &= bool(torch.equal(xg, ref[(slice(None), slice(None), *box)]))
        assert_all(comm, ok, "in-place exchange: wrong ghosts or the storage moved")
    finally:
        grid.free()


def ref_conv_pad(g, widths, periodic, value):
    """The field padded by ``widths``: wrapped on periodic axes, ``value`` on the others."""
    from torch_helpers import pad_circular

    out = pad_circular(g, widths, periodic)
    pad = []
    for ax in reversed(range(len(widths))):
        w = 0 if periodic[ax] else widths[ax]
        pad += [w, w]
    return torch.nn.functional.pad(out, pad, value=value)


@pytest.mark.mpi
def test_halo_pad_module_and_adjoint(comm):
    """HaloPad is E(pad(x)); its backward is the adjoint: <E x, y> == <x, E^T y> over all ranks."""
    dims = MPI.Compute_dims(comm.size, 3)
    shape = tuple(2 * d + 1 for d in dims)
    grid = ht.TrainGrid(comm, 1, shape, dims=dims, periodic=(True, False, True))
    try:
        pad = ht.HaloPad(grid, (1, 1, 2) if min(shape) > 2 else 1)
        gen = torch.Generator().manual_seed(comm.rank)
        x = torch.randn((2, 2, *grid.local_shape), dtype=torch.float64, generator=gen, requires_grad=True)
        y = pad(x)
        w = torch.randn(y.shape, dtype=torch.float64, generator=gen)
        (y * w).sum().backward()
        lhs = comm.allreduce(float((y.detach() * w).sum()))
        rhs = comm.allreduce(float((x.detach() * x.grad).sum()))
        scale = comm.allreduce(float(y.detach().norm() * w.norm()))
        assert_all(comm, abs(lhs - rhs) <= 1e-12 * scale, f"adjoint test: {lhs} vs {rhs}")
    finally:
        grid.free()


@pytest.mark.mpi
def test_bad_input_fails_before_communication(comm):
    grid = ht.TrainGrid(comm, 1, (comm.size * 2, 5), periodic=True)
    try:
        with pytest.raises(ValueError, match="odd"):
            ht.HaloConv2d(grid, 1, 1, 2)
        with pytest.raises(ValueError, match="wider than the smallest tile"):
            ht.HaloConv2d(grid, 1, 1, 7) if comm.size > 1 else ht.HaloConv2d(grid, 1, 1, 3, dilation=3)
        with pytest.raises(ValueError, match="does not divide"):
            ht.HaloMaxPool2d(grid, 2)  # 5 columns
        with pytest.raises(ValueError, match="output = input / stride"):
            ht.HaloMaxPool2d(grid, 3, 1, 0)
        with pytest.raises(ValueError, match="needs a 3-D field"):
            ht.HaloConv3d(grid, 1, 1, 3)
        with pytest.raises(ValueError, match="tile"):
            ht.HaloConv2d(grid, 1, 1, 3)(torch.zeros(1, 1, 3, 3, dtype=torch.float32))
        with pytest.raises(ValueError, match="contiguous or channels_last"):
            ny, nx = (n + 2 for n in grid.local_shape)
            ht.halo_exchange(torch.zeros(1, 1, ny, 2 * nx)[..., ::2], grid)  # strided columns
    finally:
        grid.free()
