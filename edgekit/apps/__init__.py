"""Applications built on the core and the backends: profiling, per-frame pipelines, video, training."""
