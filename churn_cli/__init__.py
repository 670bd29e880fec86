"""The `churn` command line and quick start: the composition root, on top of every package.

``churn_cli.main`` holds the Typer app; each other module is one command group, a thin call
into a stage (``features``, ``training``, ``serving``). No package imports ``churn_cli``.
"""
