"""Rewards that call a judge: ``remote`` (an HTTP reward service) and ``reward_model`` (a sequence classifier)."""
