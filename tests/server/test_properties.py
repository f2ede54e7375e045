"""Property tests: the request parser and the mask maths hold for any input, not just the catalogue."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from syngrpo_procedural.background import parse_label, words_of

from syngrpo.synthesis.pipeline import boxes_mask, keep_mask, paste_back, verify_labelled_regions
from syngrpo.synthesis.server.config import ServerConfig
from syngrpo.synthesis.server.validation import ApiError, SubmissionBody, parse_submission, validate_submission

from .support import job_body

CONFIG = ServerConfig(data_dir="unused", max_image_pixels=10_000)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=300))
def test_any_bytes_either_parse_or_are_refused_with_a_4xx(raw):
    try:
        body = parse_submission(raw)
    except ApiError as err:
        assert 400 <= err.status < 500 and err.code in ("bad_json", "invalid_request")
    else:
        assert isinstance(body, SubmissionBody)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["key", "image", "boxes", "labels", "description", "options", "seed"]),
       value=json_values)
def test_any_value_in_any_field_is_accepted_or_refused_with_a_4xx_never_a_crash(field, value):
    body = job_body("prop")
    body[field] = value
    try:
        validate_submission(parse_submission(json.dumps(body).encode()), CONFIG)
    except ApiError as err:
        assert 400 <= err.status < 500


boxes_st = st.lists(
    st.tuples(st.floats(-10, 50), st.floats(-10, 40), st.floats(-10, 50), st.floats(-10, 40)).map(
        lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))),
    min_size=1, max_size=4)


@given(boxes=boxes_st, seg=st.integers(0, 2**32 - 1), frac=st.floats(0, 1))
def test_the_keep_mask_never_leaves_the_boxes_and_the_paste_back_always_passes_the_label_check(boxes, seg, frac):
    rng = np.random.default_rng(seg)
    size = (40, 30)
    seg_mask = Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), "L")
    km = keep_mask(seg_mask, boxes, size, min_foreground_fraction=frac)
    inside = np.asarray(boxes_mask(boxes, size)) > 0
    kept = np.asarray(km) > 0
    assert not (kept & ~inside).any()
    original = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB")
    generated = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB")
    assert verify_labelled_regions(original, paste_back(original, generated, km), boxes, km)


@given(st.text(max_size=200))
def test_label_and_description_readers_never_raise(text):
    words = words_of(text)
    assert all(w.isalpha() and w.islower() for w in words)
    colour, shape = parse_label(text)
    assert colour is None or isinstance(colour, str)
    assert shape is None or isinstance(shape, str)
