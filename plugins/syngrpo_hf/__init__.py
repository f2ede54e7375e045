"""The ``hf`` rollout engine plugin: transformers ``generate`` on the policy itself."""
