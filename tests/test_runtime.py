"""Runtime: abort-on-error, srun-without-PMI, bad input ends the job within seconds."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from hpcml.runtime import LaunchError, check_launcher, detect_launcher
from hpcml.testing import run_mpi


def test_srun_without_pmi_detected():
    env = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_ID": "0", "SLURM_PROCID": "2", "SLURM_NTASKS": "4"}
    with pytest.raises(LaunchError, match="srun --mpi=pmi2"):
        check_launcher(world_size=1, env=env)
    check_launcher(world_size=4, env=env)  # wired up: fine
    check_launcher(world_size=1, env={**env, "HPCML_ALLOW_SINGLETONS": "1"})
    # python run straight from a batch script (no step, no PROCID) is legitimate
    check_launcher(world_size=1, env={"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"})
    check_launcher(world_size=1, env={"SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "4"})


def test_detect_launcher():
    assert detect_launcher({}) == "singleton"
    assert detect_launcher({"HYDI_CONTROL_FD": "7", "PMI_RANK": "0"}) == "mpiexec"
    assert detect_launcher({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "PMI_FD": "3"}) == "srun"


def _script(tmp_path, body):
    p = tmp_path / "job.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


FAULTS = {
    "dims": ("CartDecomp((8, 8), MPI.COMM_WORLD, dims=(2, 2))", "multiplies to 4 but the communicator has 3"),
    "zero": ("CartDecomp((8, 0), MPI.COMM_WORLD)", "grid sizes must be positive"),
    "halo": ("CartDecomp((6,), MPI.COMM_WORLD, halo=3)", "narrower than the halo"),
    "dtype": ("DistArray.zeros(CartDecomp((9,), MPI.COMM_WORLD), dtype='float99')", "unknown dtype"),
    "noncontig": (
        "DistArray.from_global(CartDecomp((9, 4), MPI.COMM_WORLD), "
        "np.zeros((9, 8))[:, ::2] if MPI.COMM_WORLD.rank == 0 else None)",
        "not contiguous",
    ),
    "wrongshape": (
        "DistArray.from_global(CartDecomp((9, 4), MPI.COMM_WORLD), "
        "np.zeros((4, 9)) if MPI.COMM_WORLD.rank == 0 else None)",
        "array shape (4, 9) != decomposition shape (9, 4)",
    ),
    "rankdep": ("CartDecomp((9 + MPI.COMM_WORLD.rank, 4), MPI.COMM_WORLD)", "differ between ranks"),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_bad_input_aborts_job(tmp_path, case):
    stmt, message = FAULTS[case]
    script = _script(
        tmp_path,
        f"""
        import numpy as np
        from mpi4py import MPI
        import hpcml
        from hpcml import CartDecomp, DistArray
        with hpcml.abort_on_error():
            {stmt}
            MPI.COMM_WORLD.Barrier()
        print("UNREACHABLE")
        """,
    )
    res = run_mpi(3, [script], timeout=60)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr
    assert "[rank " in res.stderr and "UNREACHABLE" not in res.stdout


def test_exception_on_one_rank_aborts_others(tmp_path):
    script = _script(
        tmp_path,
        """
        from mpi4py import MPI
        import hpcml

        @hpcml.abort_on_error()
        def main():
            comm = MPI.COMM_WORLD
            if comm.rank == 1:
                raise RuntimeError("solver diverged at step 12")
            comm.Barrier()  # the other ranks would wait here forever without the abort

        main()
        """,
    )
    res = run_mpi(3, [script], timeout=60)
    assert res.returncode != 0
    assert "[rank 1] RuntimeError: solver diverged at step 12" in res.stderr
    assert res.stderr.count("RuntimeError") == 1


def test_error_on_every_rank_is_printed_once_with_its_exit_code(tmp_path):
    # bad input every rank meets inside a run (an input file): one line, and a
    # configuration error ends the job with 2, as one found before the run does
    script = _script(
        tmp_path,
        """
        from mpi4py import MPI
        import hpcml
        from hpcml.config import ConfigError

        with hpcml.abort_on_error():
            raise ConfigError("grid.map file 'bad.h5' is not an HDF5 file")
        """,
    )
    res = run_mpi(3, [script], timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("ConfigError") == 1, res.stderr
    assert "[rank 0] ConfigError: grid.map file 'bad.h5' is not an HDF5 file" in res.stderr


def test_clean_exit_passes_through(tmp_path):
    script = _script(
        tmp_path,
        """
        import sys
        import hpcml
        with hpcml.abort_on_error():
            sys.exit(0)
        """,
    )
    res = run_mpi(2, [script], timeout=60)
    assert res.returncode == 0, res.stderr


def test_init_on_comm_self_inside_a_wired_up_srun_step(tmp_path):
    """``hpcml.init(MPI.COMM_SELF)`` (an app run per rank, e.g. by a user's ensemble script)
    in a SLURM step of 2 tasks that MPI wired up is not mistaken for independent singletons:
    the launcher check uses the world's size, not the communicator's."""
    script = tmp_path / "s.py"
    script.write_text("from mpi4py import MPI\nimport hpcml\nprint(hpcml.init(MPI.COMM_SELF).size)\n")
    env = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "HPCML_ALLOW_SINGLETONS": "0"}
    res = run_mpi(2, [str(script)], timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    # each rank prints "1"; the launcher may interleave the two lines ("11\n\n")
    assert "".join(res.stdout.split()) == "11", res.stdout


_BLAS_REPORT = """
import json, os, sys
import numpy  # loads NumPy's BLAS before init, as any user script does
from threadpoolctl import threadpool_info
from mpi4py import MPI
import hpcml
rt = hpcml.init()
pools = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
report = [rt.blas_threads, rt.blas_threads_from_env, pools, os.environ.get("OPENBLAS_NUM_THREADS")]
with open(os.path.join(sys.argv[1], f"rank{rt.rank}.json"), "w") as f:
    json.dump(report, f)
"""


def _blas_reports(tmp_path, ranks, **kw):
    script = tmp_path / "blas.py"
    script.write_text(_BLAS_REPORT)
    res = run_mpi(ranks, [str(script), str(tmp_path)], timeout=120, **kw)
    assert res.returncode == 0, res.stderr[-2000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(ranks)]


@pytest.mark.parametrize("ranks", [1, 2])
def test_init_gives_blas_the_ranks_share_of_the_node(tmp_path, ranks):
    """Without BLAS thread variables, each rank's BLAS gets cores per node // ranks per node threads
    (NumPy's OpenBLAS would start one per core in every rank), and libraries loaded later are told so."""
    from hpcml.runtime import BLAS_THREAD_VARS

    want = max(1, (os.cpu_count() or 1) // ranks)
    for threads, from_env, pools, exported in _blas_reports(tmp_path, ranks, unset=BLAS_THREAD_VARS):
        assert pools and set(pools) == {want} and threads == want and not from_env
        assert exported == str(want)


def test_init_leaves_blas_threads_the_user_set(tmp_path):
    """``OPENBLAS_NUM_THREADS`` (or OMP_/MKL_/BLIS_NUM_THREADS) in the environment wins over hpcml's share."""
    from hpcml.runtime import BLAS_THREAD_VARS

    users = max(1, (os.cpu_count() or 1) - 1)
    env = {"OPENBLAS_NUM_THREADS": str(users)}
    for threads, from_env, pools, exported in _blas_reports(tmp_path, 2, unset=BLAS_THREAD_VARS, env=env):
        assert set(pools) == {users} and threads == users and from_env and exported == str(users)
