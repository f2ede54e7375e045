"""Built-in describers (``register_describers``): ``openai`` (any OpenAI-compatible chat-completions
service), ``template`` (no model) and ``policy`` (the policy being trained, before training)."""
