"""What lies under the wrappers training puts around a model (DDP, peft), without importing torch.

The family lookup, checkpoint writing and weight sync all need the transformers model itself; this is the
one place that knows how to reach it.
"""

from __future__ import annotations

from typing import Any


def unwrap_model(model: Any) -> Any:
    """The transformers model under a peft (or DDP) wrapper."""
    inner = model
    for _ in range(4):
        if hasattr(inner, "module") and not hasattr(inner, "config"):
            inner = inner.module  # DistributedDataParallel
        elif hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        else:
            break
    return inner
