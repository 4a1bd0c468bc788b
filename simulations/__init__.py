"""fedwarden: simulations."""
