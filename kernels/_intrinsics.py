"""LLVM intrinsics the CPU kernels call from Numba code (private).

Each is a small :func:`numba.extending.intrinsic` that emits one LLVM instruction or
attribute where plain Python in a ``njit`` function cannot say it:

* :func:`fma` -- ``a*b + c`` rounded once, in vectorised and scalar loops alike;
* :func:`memmove` -- one ``llvm.memmove`` between two arrays that may alias;
* :func:`prefetch` -- a read prefetch of one cache line (never faults, never changes a value);
* :func:`prefer_256_bit_vectors` -- vectorise the calling function with 256-bit vectors;
* :func:`f64_bits` / :func:`bits_f64` -- a double's bit pattern as an int64 and back;
* :func:`stream_store` / :func:`address` -- a non-temporal store to a 64-byte aligned
  run of elements, and the address that tells where such a run starts;
* :func:`load_acquire` / :func:`store_release` -- an atomic load (store) of one
  element with acquire (release) ordering, for flags in memory that other
  processes map: what was written before a release store is seen by whoever
  reads the stored value with an acquire load;
* :func:`spin_pause` -- the CPU's spin-wait hint (``pause`` on x86, ``yield`` on Arm);
* :func:`pointer_like` -- an integer address as a typed pointer, for ``numba.carray``
  views of memory mapped outside NumPy.

They change speed only, never values (``fma`` changes rounding, and is used where that
rounding is the specified one).
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = [
    "address",
    "bits_f64",
    "f64_bits",
    "fma",
    "load_acquire",
    "memmove",
    "pointer_like",
    "prefer_256_bit_vectors",
    "prefetch",
    "spin_pause",
    "store_release",
    "stream_store",
]


@intrinsic
def fma(typingctx, a, b, c):  # pragma: no cover - compiled
    """``a*b + c`` rounded once (``llvm.fma.f64``): the same bits in vector and scalar loops."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(d, [d, d, d]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def memmove(typingctx, dst, dst_off, src, src_off, count):  # pragma: no cover - compiled
    """``dst[dst_off : dst_off + count] = src[src_off : src_off + count]`` as one ``llvm.memmove``."""
    sig = types.void(dst, types.intp, src, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        dval, doff, sval, soff, n = args
        darr = context.make_array(signature.args[0])(context, builder, dval)
        sarr = context.make_array(signature.args[2])(context, builder, sval)
        item = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        cgutils.raw_memmove(builder, builder.gep(darr.data, [doff]), builder.gep(sarr.data, [soff]), n, item)

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, index):  # pragma: no cover - compiled
    """Prefetch the cache line of ``arr.ravel()[index]`` for reading (``llvm.prefetch``, keep in all levels).

    ``arr`` must be C-contiguous (a flat view).  A prefetch never faults, but the
    callers keep ``index`` inside the array anyway.
    """
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch"
        )
        # read (0), highest temporal locality (3), data cache (1)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def prefer_256_bit_vectors(typingctx):  # pragma: no cover - compiled
    """Mark the function being compiled ``"prefer-vector-width"="256"``.

    LLVM vectorises AMD Zen 4/5 code with 512-bit vectors by default (Intel AVX-512
    cores already default to 256).  A stencil that reads rows shifted by one element
    makes every 512-bit load straddle two cache lines; with 256-bit vectors half of
    them do.  Called first thing in a ``prange`` body it marks the outlined parallel
    function too.  On CPUs without wider vectors it changes nothing.
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        # llvmlite's FunctionAttributes accepts only enum attributes; a string attribute is
        # written into the IR as it is
        set.add(builder.function.attributes, '"prefer-vector-width"="256"')
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def f64_bits(typingctx, x):  # pragma: no cover - compiled
    """The bits of the double ``x`` as an int64 (``bitcast``).

    For doubles that are ``+0.0`` or positive (a magnitude, a sum of magnitudes) the
    int64 order is the float order, and an integer maximum vectorises where Numba's
    float ``max`` does not (it keeps Python's NaN rule, a branch per element).
    """
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def bits_f64(typingctx, i):  # pragma: no cover - compiled
    """The double whose bits are the int64 ``i`` (the inverse of :func:`f64_bits`)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def address(typingctx, arr):  # pragma: no cover - compiled
    """The address of ``arr``'s first element as an integer (``ptrtoint``)."""
    sig = types.intp(arr)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, context.get_value_type(types.intp))

    return sig, codegen


@intrinsic
def stream_store(typingctx, arr, index, value):  # pragma: no cover - compiled
    """``arr[index] = value`` as a non-temporal store (``!nontemporal``, ``align 32``).

    A non-temporal store writes around the caches: a line written whole is never
    read first (no read-for-ownership), so an output that does not fit the cache
    costs one memory transfer instead of two.  LLVM vectorises a loop of these into
    ``vmovntpd``/``vmovntps``, which fault unless the vector's address is aligned
    to its width; the store is declared 32-byte aligned, so the caller must run the
    loop over whole 64-byte lines from a 64-byte aligned element (see
    :func:`address`): then every vector store of 4 or more doubles (8 or more
    floats) is aligned, and the vectoriser's scalar remainder never runs.  A wider
    vector declared 32-byte aligned is split by LLVM, never misaligned.  No bounds
    check, no negative indices.  ``arr`` is a 1-D view whose elements are adjacent;
    an array typed as possibly strided (layout ``"A"``) is written through its stride
    with a plain store instead, whatever the caller checked.
    """
    if not isinstance(arr, types.Array) or arr.ndim != 1:
        return None
    sig = types.void(arr, types.intp, arr.dtype)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        if aryty.layout != "C":
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
            builder.store(args[2], ptr)
            return context.get_dummy_value()
        store = builder.store(args[2], builder.gep(ary.data, [args[1]]))
        store.align = 32
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return sig, codegen


def _element_pointer(context, builder, aryty, value, index):
    ary = context.make_array(aryty)(context, builder, value)
    return builder.gep(ary.data, [index])


@intrinsic
def load_acquire(typingctx, arr, index):  # pragma: no cover - compiled
    """``arr[index]`` as one atomic load with acquire ordering (an integer element of a C-contiguous 1-D array).

    No bounds check.  Loads after it are not moved before it, by the compiler or
    the CPU, so data published with :func:`store_release` is read as written.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)):
        return None
    sig = arr.dtype(arr, types.intp)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", signature.args[0].dtype.bitwidth // 8)

    return sig, codegen


@intrinsic
def store_release(typingctx, arr, index, value):  # pragma: no cover - compiled
    """``arr[index] = value`` as one atomic store with release ordering (see :func:`load_acquire`).

    Stores before it are visible to any thread or process that reads ``value``
    with an acquire load.  No bounds check.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)):
        return None
    sig = types.void(arr, types.intp, arr.dtype)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        value = context.cast(builder, args[2], signature.args[2], signature.args[0].dtype)
        builder.store_atomic(value, ptr, "release", signature.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return sig, codegen


#: the spin-wait hint of this CPU: (LLVM intrinsic, its arguments) or None
_PAUSE = {
    "x86_64": ("llvm.x86.sse2.pause", ()),
    "AMD64": ("llvm.x86.sse2.pause", ()),
    "aarch64": ("llvm.aarch64.hint", (1,)),  # HINT #1 is YIELD
    "arm64": ("llvm.aarch64.hint", (1,)),
}.get(platform.machine())


@intrinsic
def spin_pause(typingctx):  # pragma: no cover - compiled
    """Tell the core this is a spin-wait loop (``pause`` / ``yield``; nothing on other CPUs).

    The hint frees the core's resources for a sibling hardware thread and avoids the
    memory-order flush when the awaited value arrives.
    """
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _PAUSE is not None:
            name, consts = _PAUSE
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i32] * len(consts))
            builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [i32(c) for c in consts])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def pointer_like(typingctx, arr, addr):  # pragma: no cover - compiled
    """The integer ``addr`` as a pointer to ``arr``'s element type (``inttoptr``).

    ``numba.carray(pointer_like(arr, addr), n)`` views ``n`` such elements at
    ``addr``; the caller keeps that memory mapped while the view is used.
    """
    if not isinstance(arr, types.Array) or not isinstance(addr, types.Integer):
        return None
    sig = types.CPointer(arr.dtype)(arr, addr)

    def codegen(context, builder, signature, args):
        ptrty = context.get_value_type(signature.return_type)
        value = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.inttoptr(value, ptrty)

    return sig, codegen
