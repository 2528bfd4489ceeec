"""Students outside the project: a Hugging Face-style directory, a SUPERB upstream, ONNX,
TorchScript, int8, and chunk-by-chunk streaming for causal students."""
