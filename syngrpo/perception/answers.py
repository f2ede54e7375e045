"""Reading boxes and JSON out of model answers, without ever raising.

Models write answers in many harmless variants: inside ``<answer>`` tags or not,
inside a fenced code block or not, JSON or a Python-looking list, integers or
floats.  Task parsers build on these few helpers so that every task accepts the
same variants.  Every function here takes arbitrary text and returns ``None``
(or nothing) when it finds nothing; none of them raises.

Scanning is linear in the text length (numbers are found with one regex pass and
then checked for separators), and texts are cut at :data:`MAX_ANSWER_CHARS`, so a
runaway generation cannot stall a training step.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from syngrpo.types import Box

__all__ = [
    "BOX_KEYS",
    "LABEL_KEYS",
    "MAX_ANSWER_CHARS",
    "NONE_ANSWERS",
    "as_box",
    "as_number",
    "find_box",
    "json_values",
    "parse_detections",
    "to_detection",
    "unwrap",
]

#: longer answers are cut to this many characters before parsing
MAX_ANSWER_CHARS = 20_000

# A plain decimal number (no "nan", "inf", "1_0" or hex, which float() would also accept).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FENCED = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)
_OPEN_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?")
_COMMA = re.compile(r"\s*,\s*")
_OBJECT_SPAN = re.compile(r"\{[^{}]*\}")
_LABEL_FIELD = re.compile(r"""["']?(?:label|category|name|class)["']?\s*:\s*["']([^"'\n]{1,100})["']""")

#: keys a detection object may use for its box, and for its label (first readable one wins)
BOX_KEYS = ("bbox_2d", "bbox", "box")
LABEL_KEYS = ("label", "category", "name", "class")
#: answers meaning "nothing to detect" (compared after stripping, lower case, no final period)
NONE_ANSWERS = ("none", "null", "[]", "no objects", "nothing")


def unwrap(text: str) -> str:
    """The answer proper: the last ``<answer>`` content, then the first fenced block's content.

    Without a complete ``<answer>...</answer>`` pair the whole text is the answer.

    An unterminated fence (a generation cut short) loses its opening line.
    """
    s = text[:MAX_ANSWER_CHARS]
    end = s.rfind("</answer>")
    start = s.rfind("<answer>", 0, end) if end >= 0 else -1
    if start >= 0:  # the last complete <answer>...</answer> (found from the right: linear time)
        s = s[start + len("<answer>") : end]
    fenced = _FENCED.search(s)
    if fenced:
        s = fenced.group(1)
    else:
        s = _OPEN_FENCE.sub("", s.strip())
    return s.strip()


def json_values(text: str) -> Iterator[Any]:
    """JSON values found in ``text``: the whole text, then the outermost ``[...]`` and ``{...}`` spans."""
    s = text[:MAX_ANSWER_CHARS]
    candidates = [s]
    for open_, close in (("[", "]"), ("{", "}")):
        i, j = s.find(open_), s.rfind(close)
        if 0 <= i < j and s[i : j + 1] != s:
            candidates.append(s[i : j + 1])
    for candidate in candidates:
        try:
            yield json.loads(candidate)
        except (ValueError, RecursionError):
            continue


def as_number(value: Any) -> float | None:
    """A finite float from a JSON number or a numeric string; ``None`` for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            f = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        f = float(value.strip())
    else:
        return None
    return f if math.isfinite(f) else None


def as_box(value: Any) -> Box | None:
    """A box from a sequence of four numbers, corners put in order; ``None`` otherwise.

    ``[x2, y2, x1, y1]`` reads as ``(x1, y1, x2, y2)``: which corner comes first
    carries no information worth a zero reward.
    """
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    nums = [as_number(v) for v in value]
    if any(v is None for v in nums):
        return None
    x1, y1, x2, y2 = nums  # type: ignore[misc]
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _neighbour(s: str, i: int, step: int) -> str:
    """The first non-space character from index ``i`` on in direction ``step`` (NUL past either end)."""
    while 0 <= i < len(s) and s[i].isspace():
        i += step
    return s[i] if 0 <= i < len(s) else "\0"


def find_box(text: str, *, bracketed_only: bool = False) -> Box | None:
    """The first run of exactly four comma-separated numbers in ``text``, as a box.

    A run inside ``[...]`` or ``(...)`` wins over a bare ``x1, y1, x2, y2``
    (which ``bracketed_only`` turns off).  Longer runs (``[1, 2, 3, 4, 5]``) are
    not boxes.
    """
    s = text[:MAX_ANSWER_CHARS]
    nums = list(_NUMBER.finditer(s))
    # comma[k]: numbers k and k+1 are separated by a comma only
    comma = [_COMMA.fullmatch(s, a.end(), b.start()) is not None for a, b in zip(nums, nums[1:], strict=False)]
    bare: Box | None = None
    for k in range(len(nums) - 3):
        if not (comma[k] and comma[k + 1] and comma[k + 2]):
            continue
        if (k > 0 and comma[k - 1]) or (k + 3 < len(comma) and comma[k + 3]):
            continue  # part of a longer run
        box = as_box([m.group() for m in nums[k : k + 4]])
        if box is None:
            continue
        if _neighbour(s, nums[k].start() - 1, -1) in "[(" and _neighbour(s, nums[k + 3].end(), 1) in "])":
            return box
        if bare is None:
            bare = box
    return None if bracketed_only else bare


# ---- detections: lists of {"bbox_2d", "label"} objects (OVD, ISR, ...) ----------------------


def to_detection(item: Any, *, numbers: Sequence[str] = ()) -> dict[str, Any] | None:
    """A clean ``{"bbox_2d", "label"[, "score"]}`` from one answer or dataset object, or ``None``.

    Boxes under ``bbox_2d``/``bbox``/``box`` (four numbers, corners in either
    order), labels under ``label``/``category``/``name``/``class`` (a non-empty
    string, outer spaces stripped), an optional finite ``score``.  Each key in
    ``numbers`` (ISR: ``("rotation",)``) is carried as a finite float, or ``None``
    when it is missing or not a number: a task-specific extra never makes the
    object unusable.
    """
    if not isinstance(item, Mapping):
        return None
    box = next((b for b in (as_box(item.get(k)) for k in BOX_KEYS if k in item) if b is not None), None)
    label = next((v for v in (item.get(k) for k in LABEL_KEYS) if isinstance(v, str) and v.strip()), None)
    if box is None or label is None:
        return None
    det: dict[str, Any] = {"bbox_2d": list(box), "label": label.strip()}
    score = as_number(item.get("score")) if "score" in item else None
    if score is not None:
        det["score"] = score
    for key in numbers:
        det[key] = as_number(item.get(key))
    return det


def _detections_in(value: Any, numbers: Sequence[str]) -> list[dict[str, Any]] | None:
    """The detections of one parsed JSON value; ``[]`` for an empty list, ``None`` if unusable."""
    if isinstance(value, Mapping):
        if any(k in value for k in BOX_KEYS):
            value = [value]
        else:  # {"objects": [...]} and the like
            value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list):
        return None
    if not value:
        return []
    found = [d for d in (to_detection(v, numbers=numbers) for v in value[:1000]) if d is not None]
    return found or None


def parse_detections(text: str | None, *, numbers: Sequence[str] = (),
                     none_answers: Sequence[str] = NONE_ANSWERS) -> list[dict[str, Any]] | None:
    """The detections in an answer: a list (``[]`` for "nothing there"), or ``None`` if unreadable. Never raises.

    Accepted: a JSON list of objects (or one object, or ``{"objects": [...]}``),
    optionally inside ``<answer>`` tags and/or a fenced code block, with prose
    around it; the words in ``none_answers`` (default :data:`NONE_ANSWERS`; pass
    ``()`` for a task whose prompt offers no such answer) for "nothing there".
    Objects are read by :func:`to_detection` (``numbers`` passed on); objects
    without a readable box or label are left out, and when none is readable the
    answer is.  Python-looking lists (single quotes) are read object by object.
    An empty answer is unreadable (``None``), not "nothing there".
    """
    if not isinstance(text, str):
        return None
    s = unwrap(text)
    if not s:
        return None
    if s.rstrip(".").strip().lower() in none_answers:
        return []
    for value in json_values(s):
        found = _detections_in(value, numbers)
        if found is not None:
            return found
    loose = []
    for span in _OBJECT_SPAN.finditer(s):
        box, label = find_box(span.group(), bracketed_only=True), _LABEL_FIELD.search(span.group())
        if box is not None and label is not None and label.group(1).strip():
            loose.append({"bbox_2d": list(box), "label": label.group(1).strip(), **dict.fromkeys(numbers)})
    return loose or None
