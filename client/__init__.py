"""fedwarden: client."""
