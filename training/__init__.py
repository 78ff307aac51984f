"""Ray Train jobs: base training, fine-tuning, ensembles and retraining triggers."""
