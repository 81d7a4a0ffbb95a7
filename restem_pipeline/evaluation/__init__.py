"""Evaluation: pass@k, maj@k, held-out reports and their plots."""
