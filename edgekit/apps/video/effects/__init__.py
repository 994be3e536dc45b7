"""Per-frame effects: background, beauty, denoise, low-light."""
