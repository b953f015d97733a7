"""The ablation study behind `experiments/ablate.py`, one module per job."""
