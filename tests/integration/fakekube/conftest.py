"""Fake-API tests: the fake Kubernetes API server fixture."""

from tests.support.fakekube import fake_kube  # noqa: F401 - a pytest fixture, found by its name
