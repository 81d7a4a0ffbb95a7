"""Training: the M-step (fine-tuning on verified samples), packing and batching, torchrun workers, resumable state."""
