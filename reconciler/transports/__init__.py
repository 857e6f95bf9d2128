"""Transports move structured commands to a system and bring structured results back.

They never see script text: a command is a cmdlet name and a parameter mapping.
"""
