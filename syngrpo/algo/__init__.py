"""GRPO-family maths as small pure functions, tensors in and tensors out: group advantages and the policy loss
(:mod:`.grpo`), the diversity side of Syn-GRPO, eqs. 4-8 (:mod:`.diversity`), and the advantage estimators and
policy losses the core registers (:mod:`.losses`).

Imports nothing of syngrpo but errors: a test can check every equation here against hand values.
"""
