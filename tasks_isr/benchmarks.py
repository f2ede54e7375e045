"""The ISR benchmark of Table 3: the perception stage on 500 random 3D-FRONT rooms.

The paper "randomly select[s] 500 samples from the 3D-FRONT dataset for evaluation" without a seed:
here the rooms of the prepared split are shuffled with seed 42 (VLM-R1's evaluation seed) and the
first 500 kept; ``syngrpo data sample --exclude`` draws the 2,000 training rooms from the rest
(docs/data.md).  Metrics as OVD's (§4): mAP, GP, GR at IoU 0.5, with labels absent from the
ground truth dropped from the AP (``drop_unknown_labels``, VLM-R1's OVD rule, as the ISR config).
"""

from __future__ import annotations

from syngrpo.perception.benchmark import Benchmark, PaperCell, Protocol

PROTOCOL = Protocol(subset=500, seed=42, subset_rule="shuffled_head", batch_size=8, max_new_tokens=1024)

#: Table 3, percent
_TABLE3 = {"Original": (26.18, 65.20, 42.52), "SFT": (28.11, 69.30, 44.99), "GRPO": (33.46, 74.12, 50.98),
           "Syn-GRPO": (35.77, 76.32, 53.52)}


def isr_3dfront() -> Benchmark:
    cells = [PaperCell("Table 3", column, metric, {row: v[i] for row, v in _TABLE3.items()})
             for i, (column, metric) in enumerate((("mAP", "map"), ("GP (IoU=0.5)", "gp"), ("GR (IoU=0.5)", "gr")))]
    return Benchmark(name="3dfront_isr", task="isr", task_options={"drop_unknown_labels": True}, dataset="3dfront",
                     split="all", protocol=PROTOCOL, paper=cells, metrics=("map", "gp", "gr"),
                     description="3D-FRONT ISR perception, 500 rooms (seed 42): mAP, GP, GR (Table 3)")
