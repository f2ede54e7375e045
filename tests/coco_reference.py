"""pycocotools' AP@[.5:.95] for one image, the way VLM-R1 scores OVD (a fresh ``COCO`` + ``COCOeval`` per call).

One copy for the tests that check syngrpo's rewards against pycocotools and for the benchmarks that time it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any


def pycocotools_ap(anns: Sequence[Mapping[str, Any]], dets: Sequence[Mapping[str, Any]],
                   categories: Mapping[str, int], *, image_id: int) -> float:
    """``stats[0]`` of COCOeval (bbox) for detections ``dets`` against annotations ``anns`` of image ``image_id``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": image_id}], "annotations": list(anns),
                           "categories": [{"id": v, "name": k} for k, v in categories.items()]}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(list(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])
