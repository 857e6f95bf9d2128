"""Kind declarations: the contract between manifest, planner, providers, transports and the lab."""
