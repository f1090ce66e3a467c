"""Distributed linear algebra: DistCSR, CG, SUMMA."""
