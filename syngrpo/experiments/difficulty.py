"""Synthesized images at a difficulty the experiment sets, not the description: a synthesizer plugin for studies.

The ``procedural`` synthesizer reads difficulty from the description as well as from its options: a "busy" word
("cluttered", "crowded", "full" ...) adds a distractor and a dozen clutter marks, a calm one removes the clutter.
So under Syn-GRPO the policy's description (eq. 8 picks it) moves the difficulty of the next image. The mechanism
experiment (:mod:`.mechanism`) needs images whose difficulty it sets alone: ``fixed_difficulty`` wraps a registered
synthesizer (``procedural`` by default, found through the registry) and strips those words from every description
before drawing, so colours and texture still follow the description and the difficulty follows the options
(``distractors``, ``clutter``, ``tones``). With ``plain: true`` the description becomes the one word "plain": a
fresh untextured background of random tint, the control for "new images, no harder".

Loaded by name where a data server is configured: ``plugins: [syngrpo.experiments.difficulty]`` and
``synthesizer: fixed_difficulty`` (the in-process transport's ``transport_options``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from syngrpo.hookspecs import hookimpl
from syngrpo.plugins import get_registry

#: the words the ``procedural`` synthesizer reads as "busy" or "calm" (its module, syngrpo_procedural.background);
#: tests/test_study.py checks the list is still theirs
DIFFICULTY_WORDS = frozenset({"cluttered", "busy", "crowded", "messy", "cramped", "chaotic", "full", "many",
                              "clean", "minimal", "simple", "empty", "sparse", "tidy", "plain"})


def neutral(description: str) -> str:
    """``description`` without its difficulty words (case-insensitive, whole words)."""
    words = re.split(r"(\W+)", description)
    return "".join(w for w in words if w.lower() not in DIFFICULTY_WORDS).strip()


class FixedDifficulty:
    """``base`` synthesizer with the difficulty words removed from each description (``plain``: description
    "plain"); ``options`` go to ``base``'s factory (``distractors``, ``clutter``, ``tones`` for ``procedural``)."""

    def __init__(self, *, base: str = "procedural", plain: bool = False, **options: Any) -> None:
        self.inner = get_registry().create("synthesizers", base, **options)
        self.plain = bool(plain)
        self.max_batch_size = getattr(self.inner, "max_batch_size", 16)

    def description(self, text: str) -> str:
        return "plain" if self.plain else neutral(text)

    def synthesize(self, requests: list[Any]) -> list[Any]:
        return self.inner.synthesize([dataclasses.replace(r, description=self.description(r.description))
                                      for r in requests])


def fixed_difficulty(**options: Any) -> FixedDifficulty:
    """A registered synthesizer whose difficulty its options set, whatever the description says (module doc)."""
    return FixedDifficulty(**options)


@hookimpl
def register_synthesizers(register):
    register("fixed_difficulty", fixed_difficulty)
