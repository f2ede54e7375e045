"""Issue #23 item 6: what the label check's object rule costs the data server.

The rule asks the label segmenter once more per job, on a crop of the original around each labelled box
(:func:`syngrpo.synthesis.pipeline.label_object_masks`).  Timed here on the toy REC scenes with the server's
CPU plugins (the ``object`` segmenter, the ``procedural`` synthesizer), whole pipeline jobs with the rule
(``min_label_object_coverage`` 0.8, the default) against the same jobs without it (0), the label segmenter's
call alone and the synthesizer's call alone, interleaved round by round.  The figure is the label segmenter's
call per job against one synthesis (the whole jobs' times, reported beside it, differ by less than a shared
machine's noise).  A diffusion synthesizer takes seconds a job on a GPU, so on a real
server the share is far smaller than here, where the synthesizer is a few milliseconds of numpy: the toy
figure is an upper bound.  Reported, not asserted.
"""

from __future__ import annotations

import pytest

from syngrpo.data.images import load_rgb
from syngrpo.plugins import get_registry
from syngrpo.synthesis.pipeline import PipelineItem, label_object_masks, run_pipeline

from .support import interleaved, median

pytestmark = pytest.mark.benchmark


def test_label_check_object_rule_cost_beside_one_synthesis(tmp_path, figures, quick):
    registry = get_registry()
    task = registry.create("tasks", "rec")
    n = 8 if quick else 40
    samples = task.make_toy_dataset(
        tmp_path,
        n=n,
        seed=1,
        split="train",
        image_size=84,
        grid=3,
        position_code=True,
        n_shapes=(1, 1),
        relational_prob=0.0,
    )
    items = [
        PipelineItem(load_rgb(s.image), [tuple(b) for b in task.foreground_boxes(s)], ["target"], "a busy red room", i)
        for i, s in enumerate(samples)
    ]
    segmenter = registry.create("segmenters", "object")
    synthesizer = registry.create("synthesizers", "procedural")

    def jobs(coverage: float):
        def run():
            outcomes = run_pipeline(
                items, segmenter=segmenter, synthesizer=synthesizer, min_label_object_coverage=coverage
            )
            assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]

        return run

    def masks_only():
        for it in items:
            label_object_masks(segmenter, it.image, it.boxes)

    def synthesis_only():
        synthesizer.synthesize([r for r in _requests(items, segmenter)])

    rounds = 2 if quick else 7
    t = interleaved({"with": jobs(0.8), "without": jobs(0.0), "masks": masks_only, "synthesis": synthesis_only}, rounds)
    with_rule, without = median(t["with"]) / n, median(t["without"]) / n
    masks, synthesis = median(t["masks"]) / n, median(t["synthesis"]) / n
    # the whole-job difference drowns in a shared machine's noise (it came out negative at a load average of 8-12),
    # so the figure is the rule's own work, the label segmenter's call, against one synthesis, timed side by side
    figures(
        "label check object rule: label segmentation / one synthesis",
        masks / synthesis,
        unit="x",
        target="report",
        jobs=n,
        rounds=rounds,
        label_masks_ms_per_job=1000 * masks,
        synthesis_ms_per_job=1000 * synthesis,
        job_ms_without=1000 * without,
        job_ms_with=1000 * with_rule,
    )


def _requests(items, segmenter):
    from syngrpo.synthesis.pipeline import SynthesisRequest, keep_mask

    masks = segmenter.segment([it.image for it in items], [it.boxes for it in items])
    return [
        SynthesisRequest(it.image, keep_mask(m, it.boxes, it.image.size), it.boxes, it.labels, it.description, it.seed)
        for it, m in zip(items, masks, strict=True)
    ]
