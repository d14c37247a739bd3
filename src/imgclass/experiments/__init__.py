"""Experiments: MLflow tracking of runs, Optuna searches, and the model registry
(champion and challenger aliases)."""
