"""Benchmarks run by `make bench`: every figure is a ratio against a reference measured in the
same run, with the absolute numbers beside it, written to bench/results.json."""
