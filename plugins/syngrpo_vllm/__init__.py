"""The ``vllm`` rollout engine plugin (optional GPU extra ``vllm``)."""
