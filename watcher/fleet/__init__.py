"""Fleet mode: several replicas over one PostgreSQL database, sharing the watches by lease and
the request budget by grants (:mod:`~watcher.fleet.share` decides, :mod:`~watcher.fleet.leases`
talks to the database)."""
