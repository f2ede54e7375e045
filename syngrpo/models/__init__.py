"""Model loading and tiny-model builders (nothing heavy imported here)."""
