"""Online synthesis, both sides of it: the label-preserving pipeline and its plugin contracts
(:mod:`.pipeline`), what travels between trainer and data server (:mod:`.transport`), the trainer's client
(:mod:`.client`), describers (:mod:`.describers`) and the data server itself (:mod:`.server`).

The package face re-exports the pipeline's contracts, which synthesizer and segmenter plugins import
(``from syngrpo.synthesis import Synthesizer`` keeps working as it did before the pipeline had a module of
its own).
"""

from syngrpo.synthesis.pipeline import (
    DEFAULT_MASK_THRESHOLD,
    DEFAULT_MIN_FOREGROUND_FRACTION,
    DEFAULT_MIN_LABEL_COVERAGE,
    DeadlineExceeded,
    PipelineItem,
    PipelineOutcome,
    Segmenter,
    SynthesisRequest,
    Synthesizer,
    box_pixel_bounds,
    boxes_mask,
    check_deadline,
    check_labelled_objects,
    job_deadline,
    job_options_model,
    keep_mask,
    paste_back,
    run_pipeline,
    side_by_side,
    verify_labelled_regions,
)

__all__ = [
    "DEFAULT_MASK_THRESHOLD", "DEFAULT_MIN_FOREGROUND_FRACTION", "DEFAULT_MIN_LABEL_COVERAGE", "DeadlineExceeded",
    "PipelineItem", "PipelineOutcome", "Segmenter", "SynthesisRequest", "Synthesizer", "box_pixel_bounds",
    "boxes_mask", "check_deadline", "check_labelled_objects", "job_deadline", "job_options_model", "keep_mask",
    "paste_back", "run_pipeline", "side_by_side", "verify_labelled_regions",
]
