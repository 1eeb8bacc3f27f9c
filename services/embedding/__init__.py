"""The embedding service: NVIDIA Triton Inference Server serving the user and item towers."""
