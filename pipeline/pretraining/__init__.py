"""Pre-training a teacher the way HuBERT's first iteration does (MFCC k-means targets, masked
prediction), through the training loop: how the shipped demo teacher was made."""
