"""The embedded controller: reconciles each Sandbox into a workspace on this machine.

``reconcile`` decides (pure), ``local`` acts on the machine, ``runner`` drives both from
the store's watch. ``kube/`` holds the Kubernetes operator's glue. See docs/lifecycle.md.
"""
