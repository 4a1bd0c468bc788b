"""fedwarden: privacy."""
