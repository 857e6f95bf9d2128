"""Providers: one module per system, found through the `reconciler.providers` entry point group."""
