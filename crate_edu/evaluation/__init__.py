"""Evaluation and analysis of trained models."""
