"""syngrpo: Syn-GRPO training of multimodal LLMs for visual perception.

Importing the package is cheap on purpose (no torch, no transformers): the CLI and the plugin loader run at
every start. Plugin authors import what they need from :mod:`syngrpo.api`; the packages and their layers are
drawn in docs/architecture.md.
"""

from syngrpo import _moved

__version__ = "0.2.0"

_moved.install()  # the 0.1 module paths, deprecated: importable through the 0.2 releases, gone in 0.3
