"""Profiles of a candidate under its benchmark load: the session, py-spy, the summary and the MCP tool."""
