"""syngrpo: Syn-GRPO training of multimodal LLMs for visual perception.

Importing the package is cheap on purpose (no torch, no transformers): the CLI
and the plugin loader run at every start.
"""

__version__ = "0.1.0"
