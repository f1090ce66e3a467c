"""Package list for setuptools: every package under hpcml/, plus kernels/ installed as hpcml.kernels.

Metadata and dependencies live in setup.cfg.  The package list is computed here because
``packages = find:`` cannot also map the top-level ``kernels/`` folder to ``hpcml.kernels``:
a hand-written list silently dropped new subpackages (``hpcml.apps.flux`` once) from wheels.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["hpcml", "hpcml.*"])
packages += ["hpcml.kernels"] + [f"hpcml.kernels.{p}" for p in find_packages(where="kernels")]

setup(packages=packages, package_dir={"hpcml.kernels": "kernels"})
