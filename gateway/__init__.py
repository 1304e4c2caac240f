"""SSH gateway: serves the console over SSH, one child console per session (docs/gateway.md)."""
