"""Build a tiny, randomly initialised Qwen2.5-VL (or Qwen2-VL) policy, fully offline.

Development machines and CI cannot download weights, so tests and the
quickstart run the real transformers code paths on a model of the same
architecture with ~200k parameters: a byte-level BPE tokenizer trained here on
:func:`syngrpo.models.corpus.training_corpus`, the Qwen special tokens, a chat
template of the Qwen2-VL shape, the Qwen2-VL image processor (PIL backend) and
:class:`~syngrpo.models.processing.ImageOnlyQwenVLProcessor`.  Everything is
written with ``save_pretrained``; :func:`syngrpo.models.policy.load_policy`
reads the directory exactly as it reads ``Qwen/Qwen2.5-VL-3B-Instruct``.

The build is deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

#: the Qwen2-VL / Qwen2.5-VL special tokens, in the order Qwen's tokenizer lists them
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: a chat template of the Qwen2-VL shape: a default system turn, ``<|im_start|>role\n...<|im_end|>\n``
#: turns, and ``<|vision_start|><|image_pad|><|vision_end|>`` for each image part
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

Arch = Literal["qwen2_5_vl", "qwen2_vl"]


def build_tokenizer(vocab_size: int = 640):
    """A ``Qwen2Tokenizer`` whose byte-level BPE is trained on syngrpo's corpus (~10 ms).

    It pre-tokenizes exactly as Qwen's tokenizer does (digits one by one, byte-level
    fallback for any string), so nothing the policy writes is out of vocabulary.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from syngrpo.models.corpus import training_corpus

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(training_corpus(), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    for token in QWEN_SPECIAL_TOKENS:  # after the BPE entries, in Qwen's order (as in the real vocabulary)
        vocab[token] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _text_config(arch: Arch, vocab: int, ids: dict[str, int], text_hidden: int, layers: int) -> dict:
    heads = 4
    head_dim = text_hidden // heads
    half = head_dim // 2
    # mrope_section splits head_dim/2 rotary frequencies among (temporal, height, width).
    t = half // 4
    mrope = [t, (half - t) // 2, half - t - (half - t) // 2]
    return dict(
        vocab_size=vocab,
        hidden_size=text_hidden,
        intermediate_size=2 * text_hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def _model_config(arch: Arch, tokenizer, *, text_hidden: int, layers: int, vision_hidden: int, vision_depth: int):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab = len(tokenizer)
    text = _text_config(arch, vocab, ids, text_hidden, layers)
    vision_heads = max(1, vision_hidden // 16)
    common = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_heads=vision_heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[vision_depth - 1],
            out_hidden_size=text_hidden,
            tokens_per_second=2,
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(
            depth=vision_depth,
            embed_dim=vision_hidden,
            hidden_size=text_hidden,
            mlp_ratio=2,
            num_heads=vision_heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"arch must be 'qwen2_5_vl' or 'qwen2_vl', got {arch!r}")


def build_tiny_policy(
    out_dir: str | Path,
    *,
    seed: int = 0,
    text_hidden: int = 64,
    layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    vocab_size: int = 640,
    arch: Arch = "qwen2_5_vl",
    max_pixels: int = 448 * 448,
) -> Path:
    """Write a tiny random Qwen2.5-VL (``arch="qwen2_vl"``: Qwen2-VL) policy to ``out_dir`` and return it.

    ``vocab_size`` is the size of the trained BPE (bytes + merges); the model's
    vocabulary adds the 14 Qwen special tokens.  ``max_pixels`` caps the image
    processor's resize (the real default is 12.8 MP; tiny tests want few image
    tokens).  Weights are drawn from a private RNG seeded with ``seed``, so the
    global torch RNG is untouched and the same arguments give the same bytes.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from syngrpo.models.processing import ImageOnlyQwenVLProcessor

    if text_hidden % 8 or text_hidden < 16:
        raise ValueError(f"text_hidden must be a multiple of 8 and at least 16, got {text_hidden}")
    if vision_hidden % 16:
        raise ValueError(f"vision_hidden must be a multiple of 16, got {vision_hidden}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(vocab_size)
    config = _model_config(
        arch, tokenizer, text_hidden=text_hidden, layers=layers, vision_hidden=vision_hidden, vision_depth=vision_depth
    )
    model_cls = Qwen2_5_VLForConditionalGeneration if arch == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32).eval()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out)

    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": 56 * 56, "longest_edge": max_pixels},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = ImageOnlyQwenVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                         chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    (out / "syngrpo_tiny.json").write_text(
        json.dumps(
            {
                "builder": "syngrpo.models.tiny_policy.build_tiny_policy",
                "arch": arch,
                "seed": seed,
                "text_hidden": text_hidden,
                "layers": layers,
                "vision_hidden": vision_hidden,
                "vision_depth": vision_depth,
                "vocab_size": vocab_size,
                "max_pixels": max_pixels,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    return out


def directory_hash(path: str | Path) -> str:
    """SHA-256 over every file's relative path and bytes: equal hashes mean identical builds."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def load_processor(path: str | Path):
    """The processor of a tiny (or real) policy directory; see :mod:`syngrpo.models.processing`."""
    from syngrpo.models.processing import load_processor as _load

    return _load(path)
