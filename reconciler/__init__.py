"""reconciler: keep server-to-server OAuth trust exactly as a YAML manifest says.

The flow, one direction only (see docs/architecture.md):
manifest -> desired model -> discovery (live model) -> planner -> plan -> executor -> providers -> transports.
"""

__version__ = "0.1.0"
