"""Training: multi-task pre-training (stage 1) and chat instruction tuning (stage 2)."""
