"""Applications: configuration -> run -> output (``hpcml run``)."""
