"""The response format: instructions, a parser that never raises, R_format, rendering."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syngrpo.perception.response import build_instruction, format_reward, parse_response, render_response

WELL_FORMED = (
    "<think>The dog is left.</think><score>0.35</score>"
    "<description>A dog on a beach at sunset.</description><answer>[1, 2, 30, 40]</answer>"
)


def test_syn_instruction_names_every_tag_and_keeps_the_question():
    text = build_instruction("Where is the red dog? Answer [x1, y1, x2, y2].", "syn")
    assert text.startswith("Where is the red dog?")
    for tag in (
        "<think>",
        "</think>",
        "<score>",
        "</score>",
        "<description>",
        "</description>",
        "<answer>",
        "</answer>",
    ):
        assert tag in text
    assert "[0, 1]" in text and "diverse" in text and "background" in text


def test_plain_instruction_asks_for_think_and_answer_only():
    text = build_instruction("Where is the dog?", "plain")
    assert "<think>" in text and "<answer>" in text
    assert "<score>" not in text and "<description>" not in text


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="syn"):
        build_instruction("q", "fancy")  # type: ignore[arg-type]


def test_well_formed_syn_response_parses_every_part():
    p = parse_response(WELL_FORMED, "syn")
    assert p.think == "The dog is left."
    assert p.score == 0.35
    assert p.description == "A dog on a beach at sunset."
    assert p.answer == "[1, 2, 30, 40]"
    assert p.well_formed is True
    assert format_reward(p) == 1.0


def test_whitespace_around_and_inside_tags_is_allowed_and_stripped():
    text = "\n <think>\n a \n</think>\n<score> 1 </score>  <description> d </description>\n<answer> x </answer>\n"
    p = parse_response(text)
    assert (p.think, p.score, p.description, p.answer) == ("a", 1.0, "d", "x")
    assert p.well_formed


@pytest.mark.parametrize(
    "text",
    [
        # wrong order
        "<think>a</think><description>d</description><score>0.5</score><answer>x</answer>",
        # text outside the tags
        "Sure! <think>a</think><score>0.5</score><description>d</description><answer>x</answer>",
        "<think>a</think><score>0.5</score><description>d</description><answer>x</answer> thanks",
        # a tag twice
        "<think>a</think><think>b</think><score>0.5</score><description>d</description><answer>x</answer>",
        # a tag missing
        "<think>a</think><description>d</description><answer>x</answer>",
        # unclosed answer
        "<think>a</think><score>0.5</score><description>d</description><answer>x",
        # a tag nested inside another part
        "<think>a <answer>y</answer></think><score>0.5</score><description>d</description><answer>x</answer>",
    ],
)
def test_malformed_layouts_are_not_well_formed(text):
    p = parse_response(text, "syn")
    assert p.well_formed is False
    assert format_reward(p) == 0.0


def test_out_of_range_score_is_clipped_but_breaks_the_format():
    p = parse_response("<think>a</think><score>1.7</score><description>d</description><answer>x</answer>")
    assert p.score == 1.0
    assert not p.well_formed
    p = parse_response("<think>a</think><score>-0.2</score><description>d</description><answer>x</answer>")
    assert p.score == 0.0
    assert not p.well_formed


@pytest.mark.parametrize("content", ["nan", "NaN", "inf", "-inf", "1e999", "high", "", "0.5.1", "1_0", "0x1", "½"])
def test_non_numeric_scores_are_none(content):
    p = parse_response(f"<think>a</think><score>{content}</score><description>d</description><answer>x</answer>")
    assert p.score is None
    assert not p.well_formed
    assert p.answer == "x"  # the other parts are still read


@pytest.mark.parametrize(
    "content,value", [("0", 0.0), ("1", 1.0), (".5", 0.5), ("0.25", 0.25), ("2.5e-1", 0.25), ("+0.3", 0.3)]
)
def test_numeric_score_forms(content, value):
    p = parse_response(f"<think>a</think><score>{content}</score><description>d</description><answer>x</answer>")
    assert p.score == pytest.approx(value)
    assert p.well_formed


def test_missing_parts_are_none_and_the_first_occurrence_wins():
    p = parse_response("blah <answer> first </answer> <answer>second</answer>")
    assert p.answer == "first"
    assert p.think is None and p.score is None and p.description is None
    assert not p.well_formed


def test_plain_mode_reads_think_and_answer_and_ignores_score():
    p = parse_response("<think>a</think><answer>x</answer>", "plain")
    assert (p.think, p.answer, p.score, p.description, p.well_formed) == ("a", "x", None, None, True)
    # a syn response is not well formed for a plain prompt
    assert not parse_response(WELL_FORMED, "plain").well_formed


def test_a_syn_prompt_needs_the_score_and_description():
    assert not parse_response("<think>a</think><answer>x</answer>", "syn").well_formed


def test_parser_is_linear_on_adversarial_input():
    text = "<think>" * 20000 + "<score>" * 20000 + "</answer>" * 5000
    start = time.perf_counter()
    p = parse_response(text)
    assert time.perf_counter() - start < 1.0
    assert not p.well_formed


def test_non_string_input_does_not_raise():
    p = parse_response(None)  # type: ignore[arg-type]
    assert p.text == "" and not p.well_formed


def test_render_round_trips_a_syn_response():
    text = render_response("why", "[1, 2, 3, 4]", score=0.4271, description="a cat in snow", mode="syn")
    assert (
        text
        == "<think>why</think><score>0.43</score><description>a cat in snow</description><answer>[1, 2, 3, 4]</answer>"
    )
    p = parse_response(text, "syn")
    assert (p.think, p.score, p.description, p.answer, p.well_formed) == (
        "why",
        0.43,
        "a cat in snow",
        "[1, 2, 3, 4]",
        True,
    )


def test_render_plain_round_trips():
    p = parse_response(render_response("t", "a", mode="plain"), "plain")
    assert (p.think, p.answer, p.well_formed) == ("t", "a", True)


@pytest.mark.parametrize("score", [None, -0.1, 1.5, float("nan")])
def test_render_rejects_scores_that_would_not_round_trip(score):
    with pytest.raises(ValueError):
        render_response("t", "a", score=score, description="d", mode="syn")


def test_render_rejects_parts_that_contain_tags():
    with pytest.raises(ValueError, match="tag"):
        render_response("t </think>", "a", score=0.5, description="d", mode="syn")


_tag_free = st.text(max_size=60).filter(lambda s: "<" not in s)


@given(think=_tag_free, answer=_tag_free, description=_tag_free, score=st.floats(0, 1))
def test_render_then_parse_is_identity_up_to_stripping_and_rounding(think, answer, description, score):
    p = parse_response(render_response(think, answer, score=score, description=description, mode="syn"))
    assert p.well_formed
    assert p.think == think.strip() and p.answer == answer.strip() and p.description == description.strip()
    assert p.score == pytest.approx(round(score, 2), abs=1e-9)


_tags = st.sampled_from(
    ["<think>", "</think>", "<score>", "</score>", "<description>", "</description>", "<answer>", "</answer>"]
)
_fragments = st.one_of(st.text(max_size=20), _tags, st.sampled_from(["0.5", "nan", "1e5", " ", "\n"]))


@settings(max_examples=300)
@given(st.one_of(st.text(), st.lists(_fragments, max_size=30).map("".join)), st.sampled_from(["syn", "plain"]))
def test_parser_never_raises_and_keeps_its_ranges(text, mode):
    p = parse_response(text, mode)
    assert p.text == text
    assert p.score is None or 0.0 <= p.score <= 1.0
    assert format_reward(p) in (0.0, 1.0)
    if mode == "plain":
        assert p.score is None and p.description is None
    if p.well_formed:
        assert p.think is not None and p.answer is not None
        if mode == "syn":
            assert p.score is not None and p.description is not None
