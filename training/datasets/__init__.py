"""Dataset readers and per-loan feature builders for the training pipeline."""
