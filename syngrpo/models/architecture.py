"""A policy's parameter shapes and size figures, from its config alone (no weights, no network for shipped ids).

``syngrpo plan`` needs every parameter tensor's shape (FSDP2 shards dim 0 of each
tensor, so per-rank bytes depend on shapes, not only on counts) and a few figures
for the activation estimate (hidden size, layers, vocabulary, the vision tower).
The model is built from its config under ``torch.device("meta")``: transformers
allocates nothing, so the 7B architecture takes a fraction of a second.

Where the config comes from:

* ``Qwen/Qwen2.5-VL-3B-Instruct`` and ``Qwen/Qwen2.5-VL-7B-Instruct`` (the paper
  configs' models): their published ``config.json`` figures ship with syngrpo in
  ``syngrpo/architectures/`` (3.75 B and 8.29 B parameters on the meta device);
* a local directory: its ``config.json``;
* ``tiny``: the tiny builder's options (:mod:`syngrpo.models.tiny_policy`), or the
  built directory when it exists;
* any other hub id: ``AutoConfig.from_pretrained`` (needs the hub or its cache; a
  clear error otherwise).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError

#: package data: published architecture figures of the models the paper configs name
ARCHITECTURES_DIR = Path(__file__).resolve().parent.parent / "architectures"
SHIPPED = {
    "Qwen/Qwen2.5-VL-3B-Instruct": "Qwen2.5-VL-3B-Instruct.json",
    "Qwen/Qwen2.5-VL-7B-Instruct": "Qwen2.5-VL-7B-Instruct.json",
}
#: the Qwen2-VL / Qwen2.5-VL image processor's default pixel budget (``max_pixels``)
QWEN_DEFAULT_MAX_PIXELS = 12_845_056

_LAYER = re.compile(r"^(.*\.(?:layers|blocks)\.\d+)\.")


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor: its name, shape, and which part of the model it belongs to."""

    name: str
    shape: tuple[int, ...]
    vision: bool
    #: the FSDP unit it falls in: a decoder layer / vision block name, or ``""`` for the root
    unit: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def shard_numel(self, world: int) -> int:
        """Elements one rank holds when FSDP2 shards dim 0 over ``world`` ranks (padded: ceil(dim0 / N) rows)."""
        if not self.shape:
            return 1
        rows = -(-self.shape[0] // world)
        return rows * (self.numel // self.shape[0] if self.shape[0] else 0)


@dataclass
class Architecture:
    """Shapes and figures of a policy architecture (see the module doc)."""

    name: str
    source: str
    tensors: list[Tensor]
    hidden: int
    layers: int
    intermediate: int
    kv_dim: int
    vocab: int
    vision_hidden: int
    vision_layers: int
    vision_intermediate: int
    patch_size: int
    merge_size: int
    #: the processor's default pixel budget (used when ``model.max_pixels`` is not set)
    default_max_pixels: int
    #: names of the linear layers of the language model (LoRA targets are matched against the last part)
    linears: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def vision_params(self) -> int:
        return sum(t.numel for t in self.tensors if t.vision)

    def units(self) -> dict[str, int]:
        """Parameters per FSDP unit (decoder layers, vision blocks, and the root ``""``)."""
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.unit] = out.get(t.unit, 0) + t.numel
        return out

    def lora_params(self, r: int, targets: list[str]) -> int:
        """Adapter parameters: r x (in + out) for every language-model linear whose name ends in a target."""
        return sum(r * (i + o) for name, (i, o) in self.linears.items() if name.rsplit(".", 1)[-1] in targets)


def architecture_from_config(config: Any, *, name: str, source: str, default_max_pixels: int | None = None
                             ) -> Architecture:
    """Build ``config``'s model on the meta device and read its shapes."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    tensors = []
    for pname, p in model.named_parameters():  # tied weights appear once
        m = _LAYER.match(pname)
        tensors.append(Tensor(pname, tuple(int(d) for d in p.shape), ".visual." in f".{pname}", m.group(1) if m else ""))
    linears = {mname: (int(mod.in_features), int(mod.out_features)) for mname, mod in model.named_modules()
               if isinstance(mod, torch.nn.Linear) and "language_model" in mname}
    text = getattr(config, "text_config", config)
    vision = getattr(config, "vision_config", None)
    heads = int(text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return Architecture(
        name=name, source=source, tensors=tensors,
        hidden=int(text.hidden_size), layers=int(text.num_hidden_layers), intermediate=int(text.intermediate_size),
        kv_dim=int(getattr(text, "num_key_value_heads", heads)) * head_dim, vocab=int(text.vocab_size),
        # Qwen2-VL names the tower's width embed_dim (its hidden_size is the merger's output)
        vision_hidden=int(getattr(vision, "embed_dim", 0) or getattr(vision, "hidden_size", 0)),
        vision_layers=int(getattr(vision, "depth", 0)),
        vision_intermediate=int(getattr(vision, "intermediate_size", 0)
                                or getattr(vision, "embed_dim", 0) * getattr(vision, "mlp_ratio", 4)),
        patch_size=int(getattr(vision, "patch_size", 14)), merge_size=int(getattr(vision, "spatial_merge_size", 2)),
        default_max_pixels=int(default_max_pixels or QWEN_DEFAULT_MAX_PIXELS), linears=linears,
    )


def load_architecture(policy: str, *, tiny_options: dict[str, Any] | None = None, tiny_dir: Path | None = None,
                      tiny_family: str | None = None) -> Architecture:
    """The architecture of ``model.policy`` (hub id, local directory or ``tiny``); see the module doc."""
    from transformers import AutoConfig

    if policy == "tiny":
        if tiny_dir is not None and (tiny_dir / "config.json").is_file():
            return _from_directory(tiny_dir, name="tiny", source=f"tiny policy at {tiny_dir}")
        return _tiny(dict(tiny_options or {}), tiny_family)
    if policy in SHIPPED:
        data = json.loads((ARCHITECTURES_DIR / SHIPPED[policy]).read_text(encoding="utf-8"))
        config = AutoConfig.for_model(data.pop("model_type"), **data)
        return architecture_from_config(config, name=policy, source="published figures shipped with syngrpo")
    path = Path(policy).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.policy {policy!r} is a directory without config.json")
        return _from_directory(path, name=policy, source=f"{path / 'config.json'}")
    try:
        config = AutoConfig.from_pretrained(policy)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the architecture of {policy!r}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}\n"
            f"  syngrpo ships the figures of {', '.join(SHIPPED)}; for another model pass a local directory "
            "holding its config.json (model.policy=/path), or run where the hub (or its cache) is reachable"
        ) from None
    return architecture_from_config(config, name=policy, source="the hub")


def _from_directory(path: Path, *, name: str, source: str) -> Architecture:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path))
    return architecture_from_config(config, name=name, source=source, default_max_pixels=_dir_max_pixels(path))


def _dir_max_pixels(path: Path) -> int | None:
    """The saved image processor's pixel budget, when the directory has one."""
    pre = path / "preprocessor_config.json"
    if not pre.is_file():
        return None
    data = json.loads(pre.read_text(encoding="utf-8"))
    size = data.get("size") or {}
    value = data.get("max_pixels") or (size.get("longest_edge") if isinstance(size, dict) else None)
    return int(value) if value else None


def _tiny(options: dict[str, Any], family: str | None = None) -> Architecture:
    """The tiny builder's architecture for these options: the family builds it into a scratch folder (~1 s,
    a few hundred thousand random weights), and its saved config is read like any local directory."""
    import tempfile

    from syngrpo.models.family import DEFAULT_TINY_FAMILY, get_family

    opts = dict(options)
    max_pixels = int(opts.pop("max_pixels", 448 * 448))
    name = family or opts.pop("arch", None) or DEFAULT_TINY_FAMILY
    opts.pop("arch", None)
    seed = int(opts.pop("seed", 0))
    with tempfile.TemporaryDirectory(prefix="syngrpo-plan-tiny-") as tmp:
        try:
            path = Path(get_family(name).build_tiny(Path(tmp) / "policy", seed=seed, **opts))
        except TypeError as exc:
            raise ConfigError(f"model.tiny_options: {exc}") from exc
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        from transformers import AutoConfig

        model_config = AutoConfig.for_model(config.pop("model_type"), **config)
    return architecture_from_config(model_config, name="tiny", source=f"the tiny {name} builder's options",
                                    default_max_pixels=max_pixels)
