"""WHERE and HOW an experiment runs.

One module per backend, the shared :mod:`backends.base` protocol and the plain
event types in :mod:`backends.events`. Nothing here imports textual.
"""
