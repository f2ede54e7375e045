"""The training recipe and what it is made of: the trainer that wires components and runs the loop
(:mod:`.trainer`), the supervised warm start (:mod:`.sft`, :mod:`.vision_pretrain`), evaluation (:mod:`.evaluate`),
the pre-flight checks (:mod:`.preflight`) and offline generation (:mod:`.offline`).
"""
