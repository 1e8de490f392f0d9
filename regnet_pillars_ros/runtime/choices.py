"""Names of the inference backends and precisions, importable without torch (the node's
parameter table and the launch files read them)."""

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
