"""Benchmarks of batch-watcher against the simulator, each side in its own process.

``python -m bench`` measures N = 1,000 and 10,000 and writes ``docs/benchmarks.md``;
``python -m bench --smoke`` is the small run CI makes, which checks correctness and no timing.
"""
