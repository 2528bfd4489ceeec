"""Corpora: the manifest (one row per utterance) and the sources `prepare` builds it from."""
