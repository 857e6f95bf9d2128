"""Renderings of a plan: text for people, JSON for machines. Neither ever shows a secret."""
