"""fedwarden: server."""
