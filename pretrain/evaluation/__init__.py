"""Evaluation: the evaluator over a run's validation splits."""
