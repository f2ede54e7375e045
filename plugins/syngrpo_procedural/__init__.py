"""Built-in CPU plugins: the ``procedural`` synthesizer, the ``box`` and ``object`` segmenters."""
