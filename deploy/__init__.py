"""fedwarden: deploy."""
