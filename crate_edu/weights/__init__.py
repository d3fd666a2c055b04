"""Weights and checkpoints."""
