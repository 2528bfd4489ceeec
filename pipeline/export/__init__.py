"""Students outside the project: a transformers model directory (with an s3prl upstream beside
it) that loads with transformers alone, ONNX and a batch-independent int8 ONNX, and
chunk-by-chunk streaming for causal students."""
