"""OVD benchmarks: COCO_filter (Table 2) and D³, scored with mAP, GP and GR.

VLM-R1 ships no OVD evaluation script (its issues 233 and 250 ask for one), so the protocol is the
paper's metric definitions (§4: COCO mAP@[.5:.95]; GP / GR by greedy one-to-one matching at IoU 0.5)
applied with VLM-R1's OVD answer rules, the ``vlmr1`` profile of the OVD task
(``syngrpo.perception.vlmr1``): the last ``<answer>`` block, the last ```` ```json ```` fence in it,
labels compared exactly, items with labels absent from the ground truth dropped from the AP but
counted as predictions by GP.  Every prediction scores 1.0.  Decoding is greedy with 1,024 new
tokens (a detection answer lists many boxes); the whole split is evaluated.
"""

from __future__ import annotations

from syngrpo.perception.benchmark import Benchmark, PaperCell, Protocol

PROTOCOL = Protocol(subset=None, subset_rule="all", batch_size=8, max_new_tokens=1024)

#: Table 2 (the paper does not name the model size), percent
_TABLE2 = {"Original": (14.20, 56.06, 33.79), "SFT": (18.50, 53.15, 39.40), "VLM-R1": (21.10, 67.34, 43.84),
           "GRPO": (18.66, 63.83, 36.95), "Syn-GRPO": (23.74, 71.42, 46.44)}


def _cells(table: str, rows: dict[str, tuple[float, float, float]]) -> list[PaperCell]:
    return [PaperCell(table, column, metric, {row: v[i] for row, v in rows.items()})
            for i, (column, metric) in enumerate((("mAP", "map"), ("GP (IoU=0.5)", "gp"), ("GR (IoU=0.5)", "gr")))]


def coco_filter() -> Benchmark:
    return Benchmark(name="coco_filter", task="ovd", task_options={"profile": "vlmr1"}, dataset="coco_filter",
                     split="val2017", protocol=PROTOCOL, paper=_cells("Table 2", _TABLE2), metrics=("map", "gp", "gr"),
                     description="COCO_filter (val2017, VLM-R1's filter): mAP, GP, GR (Table 2)")


def d3() -> Benchmark:
    return Benchmark(name="d3", task="ovd", task_options={"profile": "vlmr1"}, dataset="d3", split="all",
                     protocol=PROTOCOL, metrics=("map", "gp", "gr"),
                     description="D³, intra-group descriptions: mAP, GP, GR (the paper trains on D³; no table)")


BENCHMARKS = {"coco_filter": coco_filter, "d3": d3}
