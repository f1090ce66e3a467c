"""The NumPy protocol of :class:`~hpcml.distarray.DistArray`: ufuncs, operators and reductions.

Element-wise work is local: a ufunc applied to DistArrays on the same block
layout (or to scalars, or to NumPy arrays that broadcast against the *global*
shape) runs on the interiors and returns a DistArray on the first operand's
decomposition whose ghost layers are stale (``stale_halos`` is set; the next
``exchange_halos`` refreshes them).  ``out=`` writes into existing DistArrays.
CuPy interiors go through CuPy's own ``__array_ufunc__``.

Reductions (``sum prod min max any all mean var std``) are collective.  The
local block is reduced with the array module's own function, and the partial
results are combined over the ranks that share the reduced axes: ``Allreduce``
for ``sum``/``prod``, an ``Allgather`` of the partials reduced again by NumPy
for the others (so NaN propagation and complex ordering are NumPy's), two
passes for ``var``/``std`` (mean first, then squared deviations, as NumPy).
With ``axis=None`` the result is a NumPy scalar on every rank.  With ``axis``,
a result of at most one dimension is a NumPy array on every rank; a larger one
is a DistArray on the *reduced decomposition*: the kept axes' process grid over
the ranks that share the reduced axes' coordinates (``cart.Sub``), so it is
replicated along reduced axes that were split.

Mixing block layouts is a ``ValueError`` decided from global facts (shape,
process grid and cut points), so every rank raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from hpcml.backend import compute_view
from hpcml.decomp import CartDecomp
from hpcml.decomp_blocks import BlockDecomp, cuts, layout_key

if TYPE_CHECKING:
    from hpcml.distarray import DistArray

__all__ = ["REDUCTIONS", "array_function", "array_ufunc", "reduce", "same_layout"]

#: Reductions by name: (local function name, how partials combine).
REDUCTIONS = {
    "sum": ("sum", MPI.SUM),
    "prod": ("prod", MPI.PROD),
    "min": ("min", None),
    "max": ("max", None),
    "any": ("any", None),
    "all": ("all", None),
}
_UFUNC_REDUCTIONS = {
    np.add: "sum",
    np.multiply: "prod",
    np.minimum: "min",
    np.maximum: "max",
    np.logical_or: "any",
    np.logical_and: "all",
}


def _distarray() -> type:
    from hpcml.distarray import DistArray

    return DistArray


def same_layout(a: DistArray, b: DistArray) -> None:
    """Raise ``ValueError`` (on every rank) unless ``a`` and ``b`` hold the same cells on the same ranks."""
    if a.decomp is b.decomp:
        return
    if MPI.Comm.Compare(a.decomp.cart, b.decomp.cart) not in (MPI.IDENT, MPI.CONGRUENT):
        # the same block on rank r of each would be a different block of the field;
        # Comm.Compare is local and gives the same verdict on every rank of both
        raise ValueError(
            "DistArrays on different communicators (other ranks, or the same ranks in another order); "
            "build both decompositions on one communicator"
        )
    ka, kb = layout_key(a.decomp), layout_key(b.decomp)
    if ka != kb:
        raise ValueError(
            f"DistArrays on different decompositions: global shape {ka[0]} on process grid {ka[1]} "
            f"(blocks {ka[3]}) and {kb[0]} on {kb[1]} (blocks {kb[3]}); use b.redistribute(a.decomp) first"
        )


def _as_local(x: Any, ref: DistArray) -> Any:
    """The local operand standing for ``x`` next to the DistArray ``ref``."""
    DistArray = _distarray()  # noqa: N806
    if isinstance(x, DistArray):
        same_layout(ref, x)
        return x.interior
    if x is None or np.isscalar(x) or (hasattr(x, "ndim") and x.ndim == 0):
        return x
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        try:
            full = np.broadcast_shapes(tuple(x.shape), ref.shape)
        except ValueError:
            full = None
        if full != ref.shape:
            raise ValueError(
                f"an array of shape {tuple(x.shape)} does not broadcast against the DistArray's global shape "
                f"{ref.shape}"
            )
        xp = ref.xp
        if isinstance(x, np.ndarray):
            local = np.broadcast_to(x, ref.shape)[ref.decomp.slices]  # a view: nothing global is copied
            return local if xp is np else xp.asarray(local)
        return xp.broadcast_to(xp.asarray(x), ref.shape)[ref.decomp.slices]
    return NotImplemented


def _weak(x: Any) -> Any:
    """The dtype ``ufunc.resolve_dtypes`` needs for operand ``x`` (Python scalars stay weak)."""
    if type(x) in (int, float, complex, bool):
        return type(x) if type(x) is not bool else np.dtype(bool)
    return np.dtype(getattr(x, "dtype", np.asarray(x).dtype))


def _check_result_dtype(dt: np.dtype, what: str) -> None:
    from hpcml.distarray import check_dtype

    try:
        check_dtype(dt)
    except TypeError:
        raise TypeError(f"{what} would give dtype {dt}, which a DistArray cannot hold") from None


def array_ufunc(self: DistArray, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
    """``DistArray.__array_ufunc__``: element-wise ufuncs on interiors, and ``ufunc.reduce``."""
    DistArray = _distarray()  # noqa: N806
    if method == "reduce" and ufunc in _UFUNC_REDUCTIONS and len(inputs) == 1 and isinstance(inputs[0], DistArray):
        kwargs.setdefault("axis", 0)
        return reduce(inputs[0], _UFUNC_REDUCTIONS[ufunc], **kwargs)
    if method != "__call__" or ufunc.signature is not None:
        raise TypeError(
            f"numpy.{ufunc.__name__}.{method} is not supported on DistArray (element-wise calls and the "
            "reductions add/multiply/minimum/maximum/logical_or/logical_and.reduce are)"
        )
    outs = kwargs.pop("out", None)
    ref = next(x for x in (*inputs, *(outs or ())) if isinstance(x, DistArray))
    args = [_as_local(x, ref) for x in inputs]
    if any(a is NotImplemented for a in args):
        return NotImplemented
    if "where" in kwargs:
        kwargs["where"] = _as_local(kwargs["where"], ref)
    if outs is not None:
        if len(outs) != ufunc.nout or not all(isinstance(o, DistArray) for o in outs):
            raise TypeError(f"out= of numpy.{ufunc.__name__} on DistArrays must be {ufunc.nout} DistArray(s)")
        for o in outs:
            same_layout(ref, o)
        ufunc(*args, out=tuple(o.interior for o in outs), **kwargs)
        for o in outs:
            o.stale_halos = True
        return outs[0] if ufunc.nout == 1 else outs
    try:
        dts = ufunc.resolve_dtypes((*(_weak(a) for a in args), *(None,) * ufunc.nout))[ufunc.nin :]
    except (TypeError, ValueError, np.exceptions.DTypePromotionError) as exc:
        raise TypeError(f"numpy.{ufunc.__name__} on DistArray: {exc}") from None
    for dt in dts:
        _check_result_dtype(dt, f"numpy.{ufunc.__name__}")
    order = ref.order
    results = tuple(DistArray(ref.decomp, ref.xp.zeros(ref.decomp.ghosted_shape, dtype=dt, order=order)) for dt in dts)
    ufunc(*args, out=tuple(r.interior for r in results), **kwargs)
    for r in results:
        r.stale_halos = True
    return results[0] if ufunc.nout == 1 else results


# -- reductions ----------------------------------------------------------------------------------


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
        if not -ndim <= int(a) < ndim:
            raise np.exceptions.AxisError(int(a), ndim)
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate value in axis {axis!r}")
    return tuple(sorted(out))


def _host(a: Any) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a)
    if hasattr(a, "get"):
        return np.ascontiguousarray(a.get())
    return np.ascontiguousarray(np.asarray(a))


def _cached(decomp: CartDecomp, key: Any, make: Callable[[], Any]) -> Any:
    cache = decomp.plan_cache()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _group_comm(decomp: CartDecomp, axes: Sequence[int]) -> MPI.Cartcomm | None:
    """Communicator of the ranks that differ only along ``axes`` (``None`` when that is one rank)."""
    if all(decomp.dims[d] == 1 for d in axes):
        return None
    remain = [d in axes for d in range(decomp.ndim)]
    return _cached(decomp, ("hpcml.reduce.sub", tuple(remain)), lambda: decomp.cart.Sub(remain))


def mpi_type(dt: np.dtype) -> MPI.Datatype:
    """The predefined MPI datatype of ``dt`` (reductions refuse the duplicates ``from_numpy_dtype`` makes)."""
    predefined = MPI._typedict.get(np.dtype(dt).char)
    return predefined if predefined is not None else from_numpy_dtype(dt)


def _combine(block: np.ndarray, decomp: CartDecomp, axes: tuple[int, ...], kind: str) -> np.ndarray:
    """Combine per-rank partials (keepdims form) over the ranks sharing the kept coordinates."""
    comm = _group_comm(decomp, axes)
    if comm is None:
        return block
    op = REDUCTIONS[kind][1]
    mpitype = mpi_type(block.dtype)
    if op is not None:
        comm.Allreduce(MPI.IN_PLACE, [block, mpitype], op=op)
        return block
    stack = np.empty((comm.Get_size(), *block.shape), dtype=block.dtype)
    comm.Allgather([block, mpitype], [stack, mpitype])
    return getattr(np, kind)(stack, axis=0)


def _computable(a: DistArray) -> tuple[Any, ModuleType]:
    """``(interior, module)`` that NumPy-style reductions run on (a Numba-CUDA array has none of its own)."""
    data, xp = compute_view(a.data)
    return data[a.decomp.interior], xp


def _partial(a: DistArray, kind: str, axes: tuple[int, ...], dtype: Any) -> np.ndarray:
    """The reduction of ``a`` over ``axes``, for this rank's kept block, in keepdims form (host)."""
    interior, xp = _computable(a)
    fn = getattr(xp, REDUCTIONS[kind][0])
    kw = {"dtype": dtype} if dtype is not None and kind in ("sum", "prod") else {}
    local = _host(fn(interior, axis=axes, keepdims=True, **kw))
    return _combine(local, a.decomp, axes, kind)


def _mean_dtype(dt: np.dtype, dtype: Any) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    return np.dtype(np.float64) if dt.kind in "biu" else dt


def _block_reduce(a: DistArray, kind: str, axes: tuple[int, ...], dtype: Any, ddof: float) -> np.ndarray:
    count = math.prod(a.shape[d] for d in axes)
    if kind in REDUCTIONS:
        if kind in ("min", "max") and count == 0:
            raise ValueError(f"zero-size array to reduction operation {kind} which has no identity")
        return _partial(a, kind, axes, dtype)
    mdt = _mean_dtype(a.dtype, dtype)
    total = _partial(a, "sum", axes, mdt)
    mean = (total / count).astype(mdt, copy=False)
    if kind == "mean":
        return mean
    # second pass: squared deviations from the global mean (NumPy's two-pass formula)
    interior, xp = _computable(a)
    dev = interior - (xp.asarray(mean) if xp is not np else mean)
    sq = (dev.real * dev.real + dev.imag * dev.imag) if dev.dtype.kind == "c" else dev * dev
    local = _host(xp.sum(sq, axis=axes, keepdims=True))
    var = _combine(local, a.decomp, axes, "sum") / max(count - ddof, 0)
    var = var.astype(mdt.type(0).real.dtype, copy=False)
    return np.sqrt(var) if kind == "std" else var


def _reduced_decomp(decomp: CartDecomp, axes: tuple[int, ...], keepdims: bool) -> CartDecomp:
    """The kept axes' decomposition over the ranks that share the reduced axes' coordinates."""

    def make() -> CartDecomp:
        kept = [d for d in range(decomp.ndim) if d not in axes]
        sub = decomp.cart.Sub([d not in axes for d in range(decomp.ndim)])
        sizes = []
        for d in range(decomp.ndim):
            if d in axes:
                if keepdims:
                    sizes.append((1,))
                continue
            c = cuts(decomp)[d]
            sizes.append(tuple(c[k + 1] - c[k] for k in range(decomp.dims[d])))
        halo = [decomp.halo[d] if d not in axes else 0 for d in range(decomp.ndim)]
        periodic = [decomp.periodic[d] and d not in axes for d in range(decomp.ndim)]
        pick = range(decomp.ndim) if keepdims else kept
        return BlockDecomp(
            sizes,
            sub,
            periodic=[periodic[d] for d in pick],
            halo=[halo[d] for d in pick],
        )

    return _cached(decomp, ("hpcml.reduce.decomp", axes, keepdims), make)


def _gather_line(block: np.ndarray, decomp: CartDecomp, axis: int) -> np.ndarray:
    """Concatenate the blocks along ``axis`` held by the ranks of one process-grid line."""
    comm = _group_comm(decomp, (axis,))
    if comm is None:
        return block
    c = cuts(decomp)[axis]
    counts = [c[k + 1] - c[k] for k in range(decomp.dims[axis])]
    out = np.empty(decomp.shape[axis], dtype=block.dtype)
    mpitype = from_numpy_dtype(block.dtype)
    comm.Allgatherv([np.ascontiguousarray(block.ravel()), mpitype], [out, counts, list(c[:-1]), mpitype])
    return out.reshape([decomp.shape[axis] if d == axis else 1 for d in range(decomp.ndim)])


def reduce(
    a: DistArray,
    kind: str,
    axis: Any = None,
    dtype: Any = None,
    out: Any = None,
    keepdims: bool = False,
    ddof: float = 0,
    where: Any = True,
    initial: Any = None,
) -> Any:
    """Collective reduction ``kind`` of ``a`` (see the module docstring for the result types)."""
    if kind not in (*REDUCTIONS, "mean", "var", "std"):
        raise ValueError(f"unknown reduction {kind!r}")
    if where is not True or initial is not None:
        raise TypeError(f"{kind}() of a DistArray does not take where= or initial=")
    axes = _axes(axis, len(a.shape))
    block = _block_reduce(a, kind, axes, dtype, ddof)
    kept = [d for d in range(len(a.shape)) if d not in axes]
    if not kept:
        result = block if keepdims else block.reshape(())[()]
    elif len(kept) == 1:
        line = _gather_line(block, a.decomp, kept[0])
        result = line if keepdims else line.reshape(a.shape[kept[0]])
    else:
        DistArray = _distarray()  # noqa: N806
        rdecomp = _reduced_decomp(a.decomp, axes, keepdims)
        _check_result_dtype(block.dtype, f"{kind}(axis={axis})")
        result = DistArray(rdecomp, a.xp.zeros(rdecomp.ghosted_shape, dtype=block.dtype))
        local = block if keepdims else block.reshape(rdecomp.local_shape)
        result.interior[...] = local if a.xp is np else a.xp.asarray(local)
        result.stale_halos = True
    return _store(result, out)


def _store(result: Any, out: Any) -> Any:
    if out is None:
        return result
    DistArray = _distarray()  # noqa: N806
    if isinstance(out, DistArray):
        if not isinstance(result, DistArray):
            raise TypeError("out= is a DistArray but the reduction's result is a NumPy value")
        same_layout(out, result)
        out.interior[...] = result.interior
        out.stale_halos = True
        return out
    out[...] = result
    return out


# -- __array_function__ ------------------------------------------------------------------------

HANDLED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _implements(*funcs: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(impl: Callable[..., Any]) -> Callable[..., Any]:
        for f in funcs:
            HANDLED[f] = impl
        return impl

    return deco


def _reduction(kind: str) -> Callable[..., Any]:
    def impl(a: DistArray, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **kw: Any):
        return reduce(a, kind, axis=axis, dtype=dtype, out=out, keepdims=bool(keepdims), **kw)

    return impl


def _minmax(kind: str) -> Callable[..., Any]:
    def impl(a: DistArray, axis: Any = None, out: Any = None, keepdims: bool = False, **kw: Any):
        return reduce(a, kind, axis=axis, out=out, keepdims=bool(keepdims), **kw)

    return impl


for _kind in ("sum", "prod", "mean"):
    _implements(getattr(np, _kind))(_reduction(_kind))
_implements(np.min, np.amin)(_minmax("min"))
_implements(np.max, np.amax)(_minmax("max"))
_implements(np.any)(_minmax("any"))
_implements(np.all)(_minmax("all"))


@_implements(np.var)
def _var(a: DistArray, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0, keepdims: bool = False):
    return reduce(a, "var", axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=bool(keepdims))


@_implements(np.std)
def _std(a: DistArray, axis: Any = None, dtype: Any = None, out: Any = None, ddof: float = 0, keepdims: bool = False):
    return reduce(a, "std", axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=bool(keepdims))


@_implements(np.copy)
def _copy(a: DistArray, order: str = "K", subok: bool = False) -> DistArray:
    return a.copy()


def _like(fill: Any) -> Callable[..., Any]:
    def impl(a: DistArray, *args: Any, dtype: Any = None, **kw: Any) -> DistArray:
        value = (args[0] if args else kw["fill_value"]) if isinstance(fill, str) else fill
        out = _zeros_like(a, dtype)
        if value is not None:
            out.data[...] = value
        return out

    return impl


def _zeros_like(a: DistArray, dtype: Any) -> DistArray:
    """A zero DistArray on ``a``'s decomposition (``dtype`` defaults to ``a``'s)."""
    DistArray = _distarray()  # noqa: N806
    return DistArray.zeros(a.decomp, a.dtype if dtype is None else dtype, xp=a.xp, order=a.order)


_implements(np.zeros_like, np.empty_like)(_like(None))
_implements(np.ones_like)(_like(1))
_implements(np.full_like)(_like("given"))


@_implements(np.where)
def _where(cond: Any, x: Any = None, y: Any = None) -> DistArray:
    if x is None or y is None:
        raise TypeError("numpy.where(cond) with one argument is not supported on DistArray (give x and y)")
    DistArray = _distarray()  # noqa: N806
    ref = next(v for v in (cond, x, y) if isinstance(v, DistArray))
    c, xl, yl = (_as_local(v, ref) for v in (cond, x, y))
    local = ref.xp.where(c, xl, yl)
    _check_result_dtype(np.dtype(local.dtype), "numpy.where")
    out = DistArray(ref.decomp, ref.xp.zeros(ref.decomp.ghosted_shape, dtype=local.dtype))
    out.interior[...] = local
    out.stale_halos = True
    return out


@_implements(np.clip)
def _clip(a: DistArray, a_min: Any = None, a_max: Any = None, out: Any = None, **kw: Any) -> DistArray:
    lo = kw.pop("min", a_min)
    hi = kw.pop("max", a_max)
    res = a if lo is None else np.maximum(a, lo)
    res = res if hi is None else np.minimum(res, hi)
    if res is a:
        res = a.copy()
    return _store(res, out)


@_implements(np.isclose)
def _isclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> DistArray:
    DistArray = _distarray()  # noqa: N806
    ref = a if isinstance(a, DistArray) else b
    local = ref.xp.isclose(_as_local(a, ref), _as_local(b, ref), rtol=rtol, atol=atol, equal_nan=equal_nan)
    out = DistArray(ref.decomp, ref.xp.zeros(ref.decomp.ghosted_shape, dtype=bool))
    out.interior[...] = local
    out.stale_halos = True
    return out


@_implements(np.allclose)
def _allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    return bool(reduce(_isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan), "all"))


@_implements(np.linalg.norm)
def _norm(x: DistArray, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    if ord is not None or axis is not None or keepdims:
        raise TypeError("numpy.linalg.norm of a DistArray supports only the global 2-norm (no ord/axis/keepdims)")
    return x.norm()


@_implements(np.shape)
def _shape(a: DistArray) -> tuple[int, ...]:
    return a.shape


@_implements(np.ndim)
def _ndim(a: DistArray) -> int:
    return len(a.shape)


@_implements(np.size)
def _size(a: DistArray, axis: Any = None) -> int:
    return math.prod(a.shape) if axis is None else a.shape[axis]


def array_function(self: DistArray, func: Callable[..., Any], types: Any, args: Any, kwargs: Any) -> Any:
    """``DistArray.__array_function__``: the reductions and helpers above; anything else is a clear ``TypeError``."""
    impl = HANDLED.get(func)
    if impl is None:
        name = getattr(func, "__module__", "numpy").replace("numpy._core", "numpy") + "." + func.__name__
        raise TypeError(
            f"{name} is not implemented for DistArray; work on u.interior (the local block) or on "
            "u.gather()/u.allgather() (the global array, on purpose)"
        )
    return impl(*args, **kwargs)
