"""The coordinator's governance store: who may act, what happened, and a tamper-evident record.

The rest of fedwarden reaches the store through ``server.store.repository``;
this package's ``__init__`` stays free of imports so the CLI starts fast.
"""
