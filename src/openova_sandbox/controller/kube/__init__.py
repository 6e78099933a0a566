"""The Kubernetes operator: a pure renderer and reconciler, and thin kopf glue around them."""
