"""Data: synthetic portrait composites and image loading."""
