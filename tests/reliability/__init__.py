"""Reliability checks (``make reliability``): faults, load, hostile input, against a real
uvicorn process and the real stores. Every test here is marked ``reliability`` and records
its figures with :func:`tests.reliability.figures.record`; the table is printed at the end."""
