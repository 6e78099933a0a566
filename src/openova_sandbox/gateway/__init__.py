"""The model gateway's runtime part: operator config, upstream forwarder, usage parsing.

The flow (authenticate, reserve, forward, settle) is ``services.gateway``; the HTTP
routes are ``api.routes.llm``. See docs/gateway.md.
"""
