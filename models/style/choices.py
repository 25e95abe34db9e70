"""The style domain's named choices, importable without torch: a command's parser offers them before any model
loads (``--help`` answers without importing torch)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
