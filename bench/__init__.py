"""Benchmarks that print figures; they never pass or fail on wall time.

``python -m bench`` runs them all and prints a summary; each also runs alone,
e.g. ``python -m bench.overhead``.
"""
