"""Experiments built from whole training runs, and the evidence they keep.

* :mod:`.methods` -- the paper's methods as training-config switches (one table for every experiment);
* :mod:`.config` -- the toy study's configuration; :mod:`.study` -- its runner; :mod:`.report` -- its table and
  figures; :mod:`.merge` -- pooling studies that ran apart;
* :mod:`.stats` -- means over seeds, paired t and paired (seed x image) bootstrap intervals;
* :mod:`.kept` -- the compact per-run data under ``docs/study/data`` that the docs are regenerated from.
"""
