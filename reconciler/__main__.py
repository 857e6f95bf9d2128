"""`python -m reconciler` is the same as the `reconcile` console script."""

from reconciler.cli import run

run()
