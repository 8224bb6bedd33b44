"""The command line: ``watch`` (one shot, for pipelines), ``run``, ``check-config`` and ``demo``,
with the terminal report and progress bars.
"""
