"""What a run leaves in its directory: the run log, plots and gallery (:mod:`.runlog`), the trackers it feeds
(:mod:`.trackers`), checkpoints (:mod:`.checkpoint`, their sharded part, which every rank writes and reads:
:mod:`.sharded_checkpoint`), the warnings of a run that cannot learn (:mod:`.health`) and the end-of-run summary
(:mod:`.summary`).
"""
