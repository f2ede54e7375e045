"""The ``template`` describer: new scenes from fixed templates, no model needed.

Useful for trying the offline pipeline end to end, and as a model-free floor for the
offline-generation baseline.  Deterministic: a request's descriptions depend only on its
``seed`` and ``sample_id``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from syngrpo.synthesis.describers import DescribeRequest

#: ``{objects}`` is replaced by the request's labels (or "the objects")
DEFAULT_TEMPLATES = (
    "{objects} on a sandy beach at sunset, with driftwood and footprints around",
    "{objects} in a busy market street, with crowds and colourful stalls behind",
    "{objects} in a dim forest clearing, with fallen leaves and tree trunks",
    "{objects} on a cluttered wooden desk, with papers and cups scattered around",
    "{objects} in a snowy mountain village at night, under warm street lights",
    "{objects} inside a bright modern kitchen, with shiny appliances",
    "{objects} on a rainy city pavement, with reflections and umbrellas",
    "{objects} in a field of tall grass and wild flowers, under a cloudy sky",
    "{objects} in a crowded museum hall, with statues and visitors",
    "{objects} on a striped blue and yellow floor, with many similar shapes nearby",
    "{objects} in a dark warehouse, with stacked boxes and harsh shadows",
    "{objects} in a playground, with slides, swings and children in the distance",
)


class TemplateDescriber:
    """Draws ``n`` different templates per request (all of them, repeated, when ``n`` exceeds their number)."""

    def __init__(self, *, templates: Sequence[str] | None = None, seed: int = 0) -> None:
        self.templates = list(templates) if templates is not None else list(DEFAULT_TEMPLATES)
        if not self.templates or not all(isinstance(t, str) and t.strip() for t in self.templates):
            raise ValueError("templates must be a non-empty list of non-empty strings")
        self.seed = int(seed)

    def describe(self, requests: Sequence[DescribeRequest]) -> list[list[str]]:
        out = []
        for req in requests:
            rng = random.Random(f"{self.seed}/{req.seed}/{req.sample_id}")
            order = rng.sample(self.templates, len(self.templates))
            objects = ", ".join(dict.fromkeys(label for label in req.labels if label)) or "the objects"
            picked = [order[i % len(order)] for i in range(max(0, req.n))]
            out.append([t.replace("{objects}", objects) for t in picked])
        return out
