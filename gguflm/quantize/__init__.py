"""GGUF -> GGUF quantization: llama-quantize's types and per-tensor mix rules, block quantizers
byte-identical to ggml's, a streaming atomic rewrite, and `--verify` (KL, top-1, RMSE)."""
