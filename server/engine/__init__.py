"""The coordinator over Flower's deployment engine: SuperLink, node keys, runs."""
