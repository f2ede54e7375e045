"""The response format the policy is asked for, and a parser that never fails.

Syn-GRPO (paper §3.3.2, Figure 3) asks every rollout for four parts::

    <think>reasoning</think><score>0.35</score><description>a new image</description><answer>...</answer>

``<score>`` is the predicted diversity v_i in [0, 1] that the diversity reward
(eq. 6) compares with the measured one, and ``<description>`` is the new image
description d_i that description selection (eq. 8) may send to the data server.
Plain GRPO runs (``synthesis: off``) ask for ``<think>`` and ``<answer>`` only.

Model output is arbitrary text, so :func:`parse_response` accepts any string and
reports what it found; missing parts are ``None``.  :func:`format_reward` is
R_format of eq. 7.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from syngrpo.types import ParsedResponse

ResponseMode = Literal["syn", "plain"]

#: the tags each mode asks for, in the order they must appear
TAGS: dict[str, tuple[str, ...]] = {
    "syn": ("think", "score", "description", "answer"),
    "plain": ("think", "answer"),
}

# A plain decimal number (no "nan", "inf", "1_0" or hex that float() would also accept).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

_SYN_INSTRUCTIONS = (
    "Answer in exactly this format, each part once and in this order:\n"
    "<think>your reasoning</think><score>a number between 0 and 1</score>"
    "<description>a new image description</description><answer>your final answer</answer>\n"
    "- <think>: reason step by step about the image and the question.\n"
    "- <score>: a number in [0, 1] predicting how diverse your answers to this image and question would be "
    "if you answered it several times: 0 means you would always give the same answer, 1 means your answers "
    "would disagree as much as possible.\n"
    "- <description>: one sentence describing a new image for this question: keep the objects the question is "
    "about exactly as they are and describe a new background and scene around them, one that would make the "
    "question harder and your answers more diverse.\n"
    "- <answer>: your final answer"
)

_PLAIN_INSTRUCTIONS = (
    "Answer in exactly this format, each part once and in this order:\n"
    "<think>your reasoning</think><answer>your final answer</answer>\n"
    "- <think>: reason step by step about the image and the question.\n"
    "- <answer>: your final answer"
)


def _check_mode(mode: str) -> None:
    if mode not in TAGS:
        raise ValueError(f"response mode must be one of {sorted(TAGS)}, got {mode!r}")


def build_instruction(question: str, mode: ResponseMode = "syn") -> str:
    """The text prompt the policy sees: the task's question, then the response-format instructions.

    The task supplies ``question`` (with its own answer format, e.g. ``[x1, y1, x2, y2]``);
    this adds the tags of §3.3.2 so that every task shares one response format.
    """
    _check_mode(mode)
    instructions = _SYN_INSTRUCTIONS if mode == "syn" else _PLAIN_INSTRUCTIONS
    question = (question or "").strip()
    return f"{question}\n{instructions}." if question else f"{instructions}."


def _first_tag_content(text: str, tag: str) -> str | None:
    """Content of the first ``<tag>...</tag>`` (stripped), found in linear time; ``None`` if absent."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    if end < 0:
        return None
    return text[start:end].strip()


def _raw_score(content: str | None) -> float | None:
    """The number written in ``<score>`` (unclipped), or ``None`` when it is not a finite plain number."""
    if content is None or not _NUMBER.fullmatch(content):
        return None
    try:
        value = float(content)
    except (ValueError, OverflowError):  # pragma: no cover - the regex admits only valid floats
        return None
    return value if math.isfinite(value) else None


def _layout_ok(text: str, tags: tuple[str, ...]) -> bool:
    """Every tag exactly once, in order, with only whitespace outside and between them."""
    for tag in tags:
        if text.count(f"<{tag}>") != 1 or text.count(f"</{tag}>") != 1:
            return False
    # Other modes' tags must not hide inside a part either (e.g. a <score> inside <think> in plain mode).
    for tag in set(TAGS["syn"]) - set(tags):
        if f"<{tag}>" in text or f"</{tag}>" in text:
            return False
    pos = 0
    for tag in tags:
        open_tag, close_tag = f"<{tag}>", f"</{tag}>"
        start = text.find(open_tag, pos)
        if start < 0 or text[pos:start].strip():
            return False
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return False
        pos = end + len(close_tag)
    return not text[pos:].strip()


def parse_response(text: str, mode: ResponseMode = "syn") -> ParsedResponse:
    """Read one completion. Never raises on any string.

    Each part is the stripped content of its first ``<tag>...</tag>``; a part whose
    tags are missing or unclosed is ``None``.  In ``plain`` mode ``score`` and
    ``description`` are always ``None``.

    ``score`` is the number in ``<score>`` clipped to [0, 1]; it is ``None`` when
    the content is not a plain finite decimal number ("nan", "inf", "high", "").

    ``well_formed`` (see :class:`~syngrpo.types.ParsedResponse`) is true when every
    tag of the mode is present exactly once, in order, with nothing but whitespace
    around them; in ``syn`` mode it also requires the ``<score>`` to be a finite
    number already inside [0, 1], since the prompt asks for exactly that.
    """
    _check_mode(mode)
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    tags = TAGS[mode]
    think = _first_tag_content(text, "think")
    answer = _first_tag_content(text, "answer")
    score: float | None = None
    description: str | None = None
    well_formed = _layout_ok(text, tags)
    if mode == "syn":
        raw = _raw_score(_first_tag_content(text, "score"))
        if raw is not None:
            score = min(1.0, max(0.0, raw))
        description = _first_tag_content(text, "description")
        well_formed = well_formed and raw is not None and 0.0 <= raw <= 1.0
    return ParsedResponse(
        text=text,
        think=think,
        score=score,
        description=description,
        answer=answer,
        well_formed=well_formed,
    )


def format_reward(parsed: ParsedResponse) -> float:
    """R_format of eq. 7: 1.0 for a well-formed response, else 0.0."""
    return 1.0 if getattr(parsed, "well_formed", False) is True else 0.0


def render_response(
    think: str,
    answer: str,
    *,
    score: float | None = None,
    description: str | None = None,
    mode: ResponseMode = "syn",
    score_decimals: int = 2,
) -> str:
    """Write a well-formed response (SFT targets, tests); it parses back to the same parts.

    The score is written with ``score_decimals`` decimals, so it round-trips to
    ``round(score, score_decimals)``.  Raises ``ValueError`` when a part would
    not survive the round trip: a missing or out-of-range score in ``syn`` mode,
    or a part that itself contains one of the response tags.
    """
    _check_mode(mode)
    parts: dict[str, str] = {"think": think, "answer": answer}
    if mode == "syn":
        if score is None or not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise ValueError(f"syn responses need a score in [0, 1], got {score!r}")
        parts["score"] = f"{score:.{score_decimals}f}"
        parts["description"] = description or ""
    all_tags = [f"<{t}>" for t in TAGS["syn"]] + [f"</{t}>" for t in TAGS["syn"]]
    for name, value in parts.items():
        if not isinstance(value, str):
            raise ValueError(f"response part {name!r} must be a string, got {type(value).__name__}")
        if any(tag in value for tag in all_tags):
            raise ValueError(f"response part {name!r} contains a response tag: {value!r}")
    return "".join(f"<{tag}>{parts[tag].strip()}</{tag}>" for tag in TAGS[mode])
