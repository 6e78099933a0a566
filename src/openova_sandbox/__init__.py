"""OpenOva Sandbox: long-lived coding-agent sessions, server-side, in a browser terminal."""

__version__ = "0.1.0"
