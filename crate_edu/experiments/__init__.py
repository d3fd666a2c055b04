"""Experiments that only notebooks and benchmarks drive."""
