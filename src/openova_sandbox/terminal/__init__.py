"""The terminal server: persistent PTY sessions with replay and many viewers.

Entry points: :class:`~.registry.TerminalRegistry` (sessions of one or more sandboxes),
:func:`~.ws.serve_attach` (the raw WebSocket attach pump), :func:`~.server.create_pty_app`
(the routes of terminal-protocol.md) and :func:`~.standalone.build_standalone_app`
(``sandbox pty-server``). See docs/terminal.md for the design.
"""
