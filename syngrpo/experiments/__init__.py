"""Experiments built from whole training runs: the CPU study of Syn-GRPO against its baselines (:mod:`.study`).
"""
