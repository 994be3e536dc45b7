"""Constants of the low-light curve network shared without importing torch."""

ITERATIONS = 8
