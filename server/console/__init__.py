"""The operator's console: a server-rendered web application over the governance store.

``create_app(ConsoleSettings(...))`` builds it; ``fedwarden console`` serves it.
Pages read the store through ``server.store`` only, behind the same roles as the CLI.
"""
