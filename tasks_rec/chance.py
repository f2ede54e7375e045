"""REC's chance baselines: the Acc@0.5 of answers that need no model, a floor to read results against.

:meth:`tasks_rec.task.RecTask.chance_baselines` returns them where the samples allow them (toy REC
scenes, whose ``meta["objects"]`` lists every drawn object): the run summary prints them beside the
evaluation before and after RL, the CPU study beside its Table 1.

* ``random_object``: answering the box of a random object of the image (left out when every image holds
  one object: the random object is then the answer itself, not a floor);
* ``constant_box``: always answering the train split's commonest box;
* ``random_train_box``: answering the box of a random train image (a policy that ignores the image).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from syngrpo.perception.geometry import iou

#: how the run summary and the study name each row (after "chance: ")
CHANCE_LABELS = {
    "random_object": "a random object of the image",
    "constant_box": "always the commonest train box",
    "random_train_box": "the box of a random train image",
}


def is_scene(sample: Any) -> bool:
    """Whether ``sample`` is a toy REC scene: a box answer and the list of every object of the image."""
    objects = sample.meta.get("objects") if isinstance(getattr(sample, "meta", None), dict) else None
    return (isinstance(objects, list) and bool(objects) and all("bbox_2d" in o for o in objects)
            and isinstance(sample.solution, (list, tuple)) and len(sample.solution) == 4)


def _hit(box: Sequence[float], sample: Any) -> float:
    return float(iou(box, sample.solution) > 0.5)


def chance_levels(samples: Sequence[Any], train: Sequence[Any]) -> dict[str, float]:
    """Two floors for Acc@0.5: answering a random object of the image, and always the train split's commonest box."""
    random_object = sum(sum(_hit(o["bbox_2d"], s) for o in s.meta["objects"]) / len(s.meta["objects"])
                        for s in samples) / len(samples)
    common = Counter(tuple(s.solution) for s in train).most_common(1)[0][0]
    constant = sum(_hit(common, s) for s in samples) / len(samples)
    return {"random_object": random_object, "constant_box": constant}


def random_train_box(samples: Sequence[Any], train: Sequence[Any]) -> float:
    """Acc@0.5 of answering the box of a random training sample: a policy that ignores the image."""
    counts = Counter(tuple(s.solution) for s in train)
    hits = {box: sum(_hit(box, s) for s in samples) / len(samples) for box in counts}
    return sum(n * hits[box] for box, n in counts.items()) / len(train)


def chance_baselines(eval_samples: Sequence[Any], train_samples: Sequence[Any]) -> dict[str, float]:
    """Every floor of this module on ``eval_samples``, or ``{}`` when the samples are not toy REC scenes."""
    if not eval_samples or not train_samples or not all(is_scene(s) for s in [*eval_samples, *train_samples]):
        return {}
    rows = chance_levels(eval_samples, train_samples)
    if all(len(s.meta["objects"]) == 1 for s in eval_samples):
        del rows["random_object"]  # one object per image: "a random object" is the answer itself, not a floor
    rows["random_train_box"] = random_train_box(eval_samples, train_samples)
    return rows
