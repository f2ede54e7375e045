"""The small text corpus the tiny policy's tokenizer is trained on, and its word lists.

A tiny policy has a few hundred tokens; the corpus decides which strings get
their own tokens.  It holds what the policy reads and writes in syngrpo: the
chat roles, the response-format instructions and tags of Syn-GRPO §3.3.2,
boxes (digits, brackets, commas, JSON keys), the toy tasks' colour and shape
words, and background descriptions.  Pure Python, fixed (independent of the
build seed), so every tiny policy shares one tokenizer.
"""

from __future__ import annotations

import random

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray", "pink", "cyan", "brown")
SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "rectangle", "ellipse", "cross", "ring")
RELATIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the middle", "near the edge")
SCENES = (
    "a sunny beach with soft sand",
    "a snowy forest at dusk",
    "a busy city street at night",
    "a quiet kitchen with wooden shelves",
    "a green meadow under a blue sky",
    "a cluttered desk with papers",
    "a rainy parking lot with puddles",
    "a living room with a knit blanket",
    "a rocky desert with long shadows",
    "a crowded market with colorful stalls",
    "a dim library with tall bookcases",
    "a garden full of flowers",
)
THINKING = (
    "The object is in the image.",
    "I look for the object the question describes.",
    "The shape and color match the question.",
    "I compare the objects and pick the one that matches.",
)
QUESTIONS = (
    "Locate {ref} in the image. Output the bounding box as [x1, y1, x2, y2] in pixels.",
    "Please provide the bounding box coordinate of the region this sentence describes: {ref}.",
    "Detect all objects of these categories in the image: {cats}. Output a JSON list of "
    '{{"bbox_2d": [x1, y1, x2, y2], "label": name}} objects.',
)


def _referring_expression(rng: random.Random) -> str:
    ref = f"the {rng.choice(COLORS)} {rng.choice(SHAPES)}"
    return f"{ref} {rng.choice(RELATIONS)}" if rng.random() < 0.3 else ref


def _box(rng: random.Random, size: int = 112) -> list[int]:
    x1, y1 = rng.randrange(size - 8), rng.randrange(size - 8)
    return [x1, y1, rng.randrange(x1 + 4, size + 1), rng.randrange(y1 + 4, size + 1)]


def training_corpus(n: int = 600) -> list[str]:
    """``n`` deterministic lines: prompts and responses of the shape syngrpo uses."""
    from syngrpo.perception.response import build_instruction, render_response

    rng = random.Random(1234)
    lines: list[str] = ["system", "You are a helpful assistant.", "user", "assistant"]
    for i in range(n):
        ref = _referring_expression(rng)
        cats = ", ".join(sorted({rng.choice(SHAPES) for _ in range(3)}))
        question = QUESTIONS[i % len(QUESTIONS)].format(ref=ref, cats=cats)
        mode = "syn" if i % 2 == 0 else "plain"
        if i % 8 == 0:
            lines.append(build_instruction(question, mode))
        else:
            lines.append(question)
        if "bbox_2d" in question:
            objs = [f'{{"bbox_2d": {_box(rng)}, "label": "{rng.choice(SHAPES)}"}}' for _ in range(rng.randint(1, 3))]
            answer = "[" + ", ".join(objs) + "]"
        else:
            answer = str(_box(rng))
        think = rng.choice(THINKING)
        if mode == "syn":
            lines.append(render_response(think, answer, score=rng.random(), description=f"{ref} in "
                                         f"{rng.choice(SCENES)}", mode="syn"))
        else:
            lines.append(render_response(think, answer, mode="plain"))
    return lines
