"""The teacher: configs, HuBERT with its cluster head or k-means, sources, pre-training."""
