"""gitsrv: a git smart-HTTP server with token-scoped access."""

__version__ = "0.1.0"
