"""The terminal runtime: persistent PTY sessions with a screen model and many viewers.

Entry point: :class:`~.registry.TerminalRegistry` (sessions of one or more sandboxes).
No web framework here: the HTTP edge (the attach protocols, the ``sandbox pty-server``
app) is :mod:`openova_sandbox.api.terminal_edge`. See docs/terminal.md for the design.
"""
