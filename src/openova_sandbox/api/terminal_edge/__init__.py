"""The terminals' HTTP edge: WebSocket channels, the attach protocols and the terminal
server's app and server.

- :mod:`.channel`: Starlette's WebSocket as the services' ``Channel`` (control plane);
- :mod:`.ws_frames`: WebSocket frames read in ``data_received`` and written to the
  transport (the lean path both servers use); :mod:`.lean_ws`: uvicorn's protocol on it;
- :mod:`.attach`: the viewer pumps, raw (terminal-protocol.md) and ``sandbox.v2``;
- :mod:`.pty_app`: the terminal server's routes (``create_pty_app``), framework-free;
- :mod:`.pty_server`: the pod's own HTTP/1.1 + WebSocket server for them (asyncio, h11);
- :mod:`.standalone`: ``sandbox pty-server``'s app for one sandbox from Settings.

``openova_sandbox.terminal`` is the runtime behind it (PTYs, sessions, screen, ring) and
imports no web framework. Token extraction, the ``Origin`` rule and the HTTP status of a
domain error are :mod:`openova_sandbox.api.edge`'s, shared with the control plane.
"""
