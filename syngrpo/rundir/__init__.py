"""What a run leaves in its directory: the run log, plots and gallery (:mod:`.runlog`), the trackers it feeds
(:mod:`.trackers`), checkpoints (:mod:`.checkpoint`) and the end-of-run summary (:mod:`.summary`).
"""
