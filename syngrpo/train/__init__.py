"""The training recipe and what it is made of.

- :mod:`.trainer`: the recipe: ``setup`` (a list of component builds), ``train_step`` (paper §3.3.2, phase by phase);
- :mod:`.components`: the one place that builds components from a config (engine, rewards, estimator, policy
  loss, optimizer and schedule, policy and reference model, the process group);
- :mod:`.rewards` (eqs. 4-8 wired to the reward plugins), :mod:`.update` (the policy update), :mod:`.report`
  (the step's metrics and sample records): the phases of a step that are more than a call;
- :mod:`.run_state`: checkpoints written and restored under any strategy, files shipped between nodes;
- :mod:`.warm_start` (the SFT recipe, also the study's), :mod:`.sft`, :mod:`.vision_pretrain`;
- :mod:`.evaluate`, :mod:`.preflight` (``syngrpo check``), :mod:`.offline` (offline generation), :mod:`.data`
  (a run's splits).
"""
