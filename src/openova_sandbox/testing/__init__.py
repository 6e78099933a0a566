"""Public test doubles for this project and for anyone embedding it.

Fakes, not mocks: each one behaves like the real thing where a caller can tell the
difference (see ``docs/kubernetes.md`` for the fake Kubernetes API server's limits).
Nothing here is imported by the service at run time.
"""
