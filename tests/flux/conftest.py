"""Flux-transport tests: register the ``slow`` marker (full-length HipFT cases)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # flux_helpers helpers


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-length HipFT validation runs (minutes; CI runs them too)")
