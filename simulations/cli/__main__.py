"""``python -m simulations.cli``: the ``fedwarden`` command."""

from simulations.cli.app import main

main()
