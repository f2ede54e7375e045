"""Tiny, randomly initialised policies of any registered model family, fully offline.

Development machines and CI cannot download weights, so tests and the
quickstart run the real transformers code paths on a model of the same
architecture with a few hundred thousand parameters.  Each model family plugin
(:class:`syngrpo.models.family.ModelFamily`) builds its own tiny model with
:meth:`~syngrpo.models.family.ModelFamily.build_tiny`; this module holds what
they share: the build itself (:class:`TinyFamily`, a template a family fills in with
its tokens, config, generation settings and image processor), a byte-level BPE
tokenizer trained here on :func:`syngrpo.models.corpus.training_corpus`
(:func:`build_tokenizer`), the build manifest, and :func:`directory_hash`.  Everything is written with
``save_pretrained``; :func:`syngrpo.models.policy.load_policy` reads the
directory exactly as it reads a real checkpoint.

The builds are deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from syngrpo.models.corpus import training_corpus
from syngrpo.models.family import DEFAULT_TINY_FAMILY, ModelFamily, get_family
from syngrpo.models.processing import load_processor as _load_processor


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


def tiny_vision(vision_hidden: int, vision_depth: int, patch_size: int, **extra: Any) -> dict[str, Any]:
    """The vision-tower part of a tiny patch-grid config: ``vision_depth`` blocks of ``vision_hidden`` (FFN 2x,
    one head per 16 channels), merge 2, two frames per temporal patch; ``extra`` adds the family's own keys."""
    return dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                num_heads=max(1, vision_hidden // 16), patch_size=patch_size, spatial_merge_size=2,
                temporal_patch_size=2, **extra)


class TinyFamily(ModelFamily):
    """A model family whose :meth:`build_tiny` is the shared recipe; the family fills in its parts.

    The recipe: check the sizes, train the tokenizer (:meth:`tiny_tokenizer`: the family's special tokens,
    end-of-turn and pad tokens, :attr:`chat_template`), make the config (:meth:`tiny_config`), initialise the
    model from a private RNG, give it a generation config (:meth:`tiny_generation`), save it, save the
    processor (:meth:`processor_class` around :meth:`tiny_image_processor`), and write the manifest.
    """

    #: the family's special tokens, in the order its real vocabulary lists them
    special_tokens: ClassVar[tuple[str, ...]] = ()
    #: the tokenizer's end-of-turn and padding tokens
    eos_token: ClassVar[str] = ""
    pad_token: ClassVar[str] = ""
    #: a chat template of the family's shape
    chat_template: ClassVar[str] = ""

    def tiny_tokenizer(self, vocab_size: int) -> Any:
        """A tokenizer trained here with the family's special tokens (:func:`build_tokenizer`)."""
        return build_tokenizer(vocab_size, special_tokens=self.special_tokens, eos_token=self.eos_token,
                               pad_token=self.pad_token, chat_template=self.chat_template)

    def tiny_config(self, tokenizer: Any, *, text_hidden: int, layers: int, vision_hidden: int,
                    vision_depth: int) -> Any:
        """The transformers config of the tiny model (its token ids from ``tokenizer``)."""
        raise NotImplementedError

    def tiny_generation(self, tokenizer: Any) -> dict[str, Any]:
        """Keyword arguments of the tiny model's ``GenerationConfig`` (its end-of-turn and pad ids)."""
        raise NotImplementedError

    def tiny_image_processor(self, max_pixels: int) -> Any:
        """The image processor, resizing to at most ``max_pixels``."""
        raise NotImplementedError

    def build_tiny(self, out_dir: str | Path, *, seed: int = 0, text_hidden: int = 64, layers: int = 2,
                   vision_hidden: int = 32, vision_depth: int = 2, vocab_size: int = 640,
                   max_pixels: int = 448 * 448) -> Path:
        """A ~200k-parameter model with the real architecture; ``max_pixels`` caps the processor's resize."""
        from transformers import GenerationConfig

        check_sizes(text_hidden, vision_hidden)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer = self.tiny_tokenizer(vocab_size)
        config = self.tiny_config(tokenizer, text_hidden=text_hidden, layers=layers, vision_hidden=vision_hidden,
                                  vision_depth=vision_depth)
        model = init_model(self.model_class(), config, seed)
        model.generation_config = GenerationConfig(**self.tiny_generation(tokenizer))
        model.save_pretrained(out)
        processor = self.processor_class()(image_processor=self.tiny_image_processor(max_pixels), tokenizer=tokenizer,
                                           chat_template=self.chat_template)
        processor.save_pretrained(out)
        builder = f"{type(self).__module__.partition('.')[0]}:{self.name}"  # the package that provides the family
        write_manifest(out, builder, model, arch=self.name, seed=seed, text_hidden=text_hidden, layers=layers,
                       vision_hidden=vision_hidden, vision_depth=vision_depth, vocab_size=vocab_size,
                       max_pixels=max_pixels)
        return out


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
    return _load_processor(path)
