"""How a run uses its hardware: processes and the strategy (:mod:`.parallel`), FSDP2 sharding (:mod:`.fsdp`),
optimizer state keyed by name (:mod:`.optimizer_state`), mixed precision (:mod:`.precision`), the memory plan
made before anything loads (:mod:`.plan`) and the memory measured while it runs (:mod:`.memory`).
"""
