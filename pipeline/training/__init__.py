"""Stage two's machinery: the one training loop, batches, the cache stream."""
