"""Training: optimisation, checkpoints, loops and evaluation metrics."""
