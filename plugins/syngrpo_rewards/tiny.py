"""A tiny, randomly initialised reward model (``Qwen2ForSequenceClassification``, one logit), fully offline.

For tests and for trying the ``reward_model`` reward without downloading a judge: the same transformers
classes a real Qwen2-based reward model uses, a few tens of thousands of parameters, deterministic per seed.
"""

from __future__ import annotations

from pathlib import Path

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def build_tiny_reward_model(out_dir: str | Path, *, seed: int = 0, num_labels: int = 1,
                            chat_template: bool = True) -> Path:
    """Write a tiny sequence classifier and its tokenizer to ``out_dir`` (``save_pretrained``); return the path."""
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from syngrpo.models.tiny_policy import build_tokenizer

    out = Path(out_dir)
    tokenizer = build_tokenizer(320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                chat_template=_CHAT_TEMPLATE if chat_template else None)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         num_labels=num_labels, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():  # a random head is ~0 everywhere; widen it so different texts score visibly apart
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
