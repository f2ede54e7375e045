"""Describers: image descriptions written *before* training (the offline-generation baseline, Table 1).

In Syn-GRPO the policy writes each new image description during training (``<description>``,
§3.3.2).  The "GRPO + Offline Generation" baseline instead has an external model (GPT-4o in the
paper) describe new images beforehand; the images are synthesized offline and plain GRPO trains
on originals + synthesized samples.  A describer is the plugin that writes those descriptions
(``register_describers``); ``syngrpo synth --offline`` (:mod:`syngrpo.train.offline`) drives it.

This module holds what every describer shares: the request, the protocol, the instruction a
model-backed describer sends, and the reader of its reply.  It names no describer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from syngrpo.algo.diversity import usable_description

__all__ = ["DescribeRequest", "Describer", "DescriberError", "describe_instruction", "read_descriptions"]


class DescriberError(RuntimeError):
    """A describer cannot work at all (unreachable service, refused key): stop before any image is made."""


@dataclass
class DescribeRequest:
    """One image to describe ``n`` times: new scenes around its labelled objects."""

    #: the original image (PIL, RGB)
    image: Any
    #: the task's question for it (what the model will be asked during training)
    question: str
    #: the labelled objects that must stay in the image, as text
    labels: list[str] = field(default_factory=list)
    #: how many different descriptions to write
    n: int = 1
    #: a seed for describers that draw at random (the same request gives the same descriptions)
    seed: int = 0
    sample_id: str = ""


@runtime_checkable
class Describer(Protocol):
    """Writes new-image descriptions; a plugin registered with ``register_describers``."""

    def describe(self, requests: Sequence[DescribeRequest]) -> list[list[str]]:
        """Up to ``request.n`` usable descriptions per request, in order.

        Fewer (even none) is allowed: the runner synthesizes what it gets and says how many
        were missing.  Raise :class:`DescriberError` when nothing can work (a service that cannot
        be reached); a problem with one request should give that request an empty list instead.
        """
        ...


def describe_instruction(request: DescribeRequest) -> str:
    """What a model-backed describer asks for one image (the paper does not publish its GPT-4o prompt).

    It asks for what Syn-GRPO's ``<description>`` asks of the policy: a new image around the same
    objects that would make the question harder to answer consistently.
    """
    objects = ", ".join(dict.fromkeys(label for label in request.labels if label)) or "the labelled objects"
    return (
        f"This image is used to train a model on the question: {request.question!r}\n"
        f"Write {request.n} different descriptions of a new version of this image for an image generator. "
        f"Keep {objects} exactly where and as they are; change everything else (background, setting, "
        "lighting, clutter, other objects) so that the question becomes harder to answer and the answers "
        "more diverse. One description per line, each one sentence of at most 40 words, no numbering, "
        "nothing else."
    )


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.):]|\(\d+\))\s*")


def read_descriptions(text: str | None, n: int) -> list[str]:
    """The first ``n`` usable descriptions of a reply: one per line, bullets and numbering removed."""
    if not isinstance(text, str):
        return []
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip().strip('"').strip()
        if usable_description(line) and line not in out:
            out.append(line)
        if len(out) >= n:
            break
    return out
