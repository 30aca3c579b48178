"""Evaluation: metrics, evaluation results, the champion re-scored, and the promotion gate."""
