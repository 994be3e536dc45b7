"""Reference model definitions (PyTorch; import torch lazily through these modules only)."""
