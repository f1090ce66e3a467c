"""Applications: configuration -> run -> output (``hpcml run``).

Each application module exposes ``run(config: dict, comm) -> dict`` (a summary of
the run) and ships its defaults as ``hpcml/defaults/<app>.toml``.
"""

APPS: dict[str, str] = {
    "heat": "hpcml.apps.heat",
    "flux": "hpcml.apps.flux",
    "train": "hpcml.apps.train",
    "poisson": "hpcml.apps.poisson",
}
