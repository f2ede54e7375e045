"""GLM-4.1V-Thinking (zai-org): boxes in 0-1000 coordinates relative to the image.

Why this family is the built-in one outside Qwen: it is the non-Qwen VLM whose
grounding convention its makers document (zai-org's ``glmv-grounding`` skill:
"x = round(x_pixel / W * 1000), y = round(y_pixel / H * 1000)", origin top-left),
it is a reasoning model trained with RL (``<think>…</think><answer>…</answer>``,
the response shape Syn-GRPO uses), transformers 5 ships it natively
(``Glm4vForConditionalGeneration``), and its inputs are the patch-grid kind
(pixel patches, ``image_grid_thw``, ``mm_token_type_ids``, 3-D rotary positions),
so shared-prefix scoring applies.  InternVL, Gemma 3 and LLaVA-OneVision publish
no box convention (REFERENCE.md's probe).

Chat format: ``[gMASK]<sop><|user|>\\n<|begin_of_image|><|image|><|end_of_image|>
question<|assistant|>\\n``; the assistant's turn ends when it writes ``<|user|>``
(or ``<|endoftext|>`` / ``<|observation|>``).  Real checkpoints wrap boxes in
``<|begin_of_box|>…<|end_of_box|>``; the tasks' parsers read the numbers inside.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin
from transformers.models.glm4v.processing_glm4v import Glm4vProcessor

from syngrpo.models.family import CoordinateConvention
from syngrpo.models.tiny_policy import TinyFamily, tiny_vision

#: GLM-4.1V's special tokens (the subset the chat format and the vision input use), in its order
GLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
)

#: placed only by the processor (sampling one breaks the next forward with pixels)
GLM_VISION_TOKENS = ("<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
                     "<|image|>", "<|video|>")

#: a chat template of the GLM-4.1V shape (no default system turn)
GLM_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class ImageOnlyGlm4vProcessor(Glm4vProcessor):
    """``Glm4vProcessor`` without the video processor (no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.video_start_id = tokenizer.convert_tokens_to_ids("<|begin_of_video|>")
        self.video_end_id = tokenizer.convert_tokens_to_ids("<|end_of_video|>")


class Glm4vFamily(TinyFamily):
    name = "glm4v"
    model_types = ("glm4v",)
    coordinates = CoordinateConvention(
        "relative", 1000, source="zai-org glmv-grounding skill: x = round(x_pixel / W * 1000), "
                                 "y = round(y_pixel / H * 1000)")
    suppress_tokens = GLM_VISION_TOKENS
    eos_tokens = ("<|user|>", "<|endoftext|>", "<|observation|>")
    special_tokens = GLM_SPECIAL_TOKENS
    eos_token = "<|user|>"
    pad_token = "<|endoftext|>"
    chat_template = GLM_CHAT_TEMPLATE
    example_checkpoint = "zai-org/GLM-4.1V-9B-Thinking"

    def model_class(self) -> Any:
        from transformers import Glm4vForConditionalGeneration

        return Glm4vForConditionalGeneration

    def processor_class(self) -> Any:
        return ImageOnlyGlm4vProcessor

    def tiny_config(self, tokenizer, *, text_hidden: int, layers: int, vision_hidden: int, vision_depth: int) -> Any:
        """Partial rotary (half of head_dim) with mrope, 8-pixel patches."""
        from transformers import Glm4vConfig

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GLM_SPECIAL_TOKENS}
        head_dim = text_hidden // 4
        rotary_half = head_dim // 4  # partial_rotary_factor 0.5: head_dim / 2 rotary dims, head_dim / 4 frequencies
        t = max(1, rotary_half // 4)
        mrope = [rotary_half - 2 * ((rotary_half - t) // 2), (rotary_half - t) // 2, (rotary_half - t) // 2]
        text = dict(
            vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5,
                             "mrope_section": mrope},
            pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|user|>"],
        )
        vision = tiny_vision(vision_hidden, vision_depth, 8, image_size=32, out_hidden_size=text_hidden)
        config = Glm4vConfig(
            text_config=text, vision_config=vision,
            image_token_id=ids["<|image|>"], video_token_id=ids["<|video|>"],
            image_start_token_id=ids["<|begin_of_image|>"], image_end_token_id=ids["<|end_of_image|>"],
            video_start_token_id=ids["<|begin_of_video|>"], video_end_token_id=ids["<|end_of_video|>"],
            tie_word_embeddings=False,
        )
        config.eos_token_id = ids["<|user|>"]
        config.pad_token_id = ids["<|endoftext|>"]
        return config

    def tiny_generation(self, tokenizer) -> dict[str, Any]:
        eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|user|>", "<|endoftext|>", "<|observation|>")]
        return dict(eos_token_id=eos, pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))

    def tiny_image_processor(self, max_pixels: int) -> Any:
        from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

        return Glm4vImageProcessorPil(size={"shortest_edge": 32 * 32, "longest_edge": max_pixels},
                                      patch_size=8, temporal_patch_size=2, merge_size=2)
