"""Per-frame video pre-processing: kernels, effects and the ``edgekit process`` driver."""
