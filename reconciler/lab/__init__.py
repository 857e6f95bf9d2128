"""The lab: a built-in, file-backed emulation of Skype for Business servers and their metadata documents.

The demo and the end-to-end tests run against it. `state` holds the state file, `estate` the
default estate, `skype` the cmdlets (dispatched by `emulator`), `transport` the Transport over it,
`server` the HTTP server for metadata documents, `admin` and `cli` the `reconcile lab` commands.
"""
