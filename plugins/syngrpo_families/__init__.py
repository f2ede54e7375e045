"""Built-in model families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4.1V), one module each, registered by entry point."""
