"""Evaluation: frozen upstreams, the ASR probe, agreement with the teacher, the report."""
