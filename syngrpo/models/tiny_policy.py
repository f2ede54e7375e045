"""Tiny, randomly initialised policies of any registered model family, fully offline.

Development machines and CI cannot download weights, so tests and the
quickstart run the real transformers code paths on a model of the same
architecture with a few hundred thousand parameters.  Each model family plugin
(:class:`syngrpo.models.family.ModelFamily`) builds its own tiny model with
:meth:`~syngrpo.models.family.ModelFamily.build_tiny`; this module holds what
they share: a byte-level BPE tokenizer trained here on
:func:`syngrpo.models.corpus.training_corpus` (:func:`build_tokenizer`), the
build manifest, and :func:`directory_hash`.  Everything is written with
``save_pretrained``; :func:`syngrpo.models.policy.load_policy` reads the
directory exactly as it reads a real checkpoint.

The builds are deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def build_tokenizer(vocab_size: int = 640, *, special_tokens: Sequence[str], eos_token: str, pad_token: str,
                    chat_template: str, bos_token: str | None = None):
    """A ``Qwen2Tokenizer`` whose byte-level BPE is trained on syngrpo's corpus (~10 ms).

    It pre-tokenizes as Qwen's tokenizer does (digits one by one, byte-level
    fallback for any string), so nothing the policy writes is out of vocabulary.
    ``special_tokens`` (the family's, in its own order) follow the BPE entries.
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
    for token in special_tokens:  # after the BPE entries, in the family's order (as in the real vocabularies)
        vocab[token] = len(vocab)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    named = {eos_token, pad_token} | ({bos_token} if bos_token else set())
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        additional_special_tokens=[t for t in special_tokens if t not in named],
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    tokenizer.chat_template = chat_template
    return tokenizer


def text_rope_sections(head_dim: int) -> list[int]:
    """An mrope split of ``head_dim / 2`` rotary frequencies among (temporal, height, width)."""
    half = head_dim // 2
    t = half // 4
    return [t, (half - t) // 2, half - t - (half - t) // 2]


def check_sizes(text_hidden: int, vision_hidden: int) -> None:
    if text_hidden % 8 or text_hidden < 16:
        raise ValueError(f"text_hidden must be a multiple of 8 and at least 16, got {text_hidden}")
    if vision_hidden % 16:
        raise ValueError(f"vision_hidden must be a multiple of 16, got {vision_hidden}")


def init_model(model_cls: Any, config: Any, seed: int) -> Any:
    """``model_cls(config)`` in float32 with weights from a private RNG (the global torch RNG is untouched)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(config).to(torch.float32).eval()


def write_manifest(out: Path, builder: str, model: Any, **options: Any) -> None:
    """``syngrpo_tiny.json``: how the directory was built (sorted keys, so builds stay byte-identical)."""
    record = {"builder": builder, **options, "parameters": sum(p.numel() for p in model.parameters())}
    (out / "syngrpo_tiny.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def build_tiny_policy(out_dir: str | Path, *, seed: int = 0, arch: str | None = None, family: str | None = None,
                      **options: Any) -> Path:
    """Write the tiny random policy of a model family (default: Qwen2.5-VL) to ``out_dir`` and return it.

    ``family`` (or its older name ``arch``) is a registered model family; the
    other options go to that family's ``build_tiny`` (``text_hidden``, ``layers``,
    ``vision_hidden``, ``vision_depth``, ``vocab_size``, ``max_pixels``).
    """
    from syngrpo.models.family import DEFAULT_TINY_FAMILY, get_family

    name = family or arch or DEFAULT_TINY_FAMILY
    return Path(get_family(name).build_tiny(out_dir, seed=seed, **options))


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
