"""The Argo work queue: a database of sweep configs that workers claim in batches.

:mod:`backends.queue.store` (SQLAlchemy 2; SQLite embedded, PostgreSQL for real
deployments), :mod:`backends.queue.api` (FastAPI under ``/api/v1/workflow``)
and :mod:`backends.queue.worker` (the reference worker).
"""
