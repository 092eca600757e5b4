"""Benchmarks: one module per performance figure, each printing a table. `make bench` runs them all."""
