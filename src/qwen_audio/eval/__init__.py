"""Evaluation: metrics as the field computes them, and the paper's benchmarks."""
