"""The core: how one watch lives (the lifecycle, the polling policy) and how all of them are run
(the engine, the shared request budget). Imports :mod:`watcher.api`; knows nothing of the
daemon, the state store's backends, or the command line.
"""
