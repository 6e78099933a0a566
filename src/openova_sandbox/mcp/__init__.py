"""The MCP server of OpenOva Sandbox (issue 14): tools and live resources for the agents
of a sandbox, behind a per-sandbox token (docs/mcp.md)."""
