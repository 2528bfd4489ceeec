"""Audio in: reading files, frame arithmetic, length batching, classic features."""
