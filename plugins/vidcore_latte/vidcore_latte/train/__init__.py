"""Training: objectives, EMA, checkpoints, the loop (`Trainer`) and its command line."""
