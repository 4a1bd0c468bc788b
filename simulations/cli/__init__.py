"""The ``fedwarden`` command line: one module per command or group, assembled in ``app``.

Command modules parse arguments and print; the work lives in the library packages.
"""
