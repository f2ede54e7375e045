"""How a run uses its hardware: processes and sharding (:mod:`.parallel`), mixed precision (:mod:`.precision`), the
memory plan made before anything loads (:mod:`.plan`) and the memory measured while it runs (:mod:`.memory`).
"""
