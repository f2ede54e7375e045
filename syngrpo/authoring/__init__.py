"""Tools for plugin authors: the ``syngrpo new-plugin`` templates (:mod:`.scaffold`).
"""
