"""``batch-watcher run``: the long-running service around the core: the HTTP app (metrics, control
API, status page), the webhook notifier, and the service that starts and stops them.
"""
