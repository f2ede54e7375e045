"""Built-in CPU plugins: the ``procedural`` synthesizer and the ``box`` segmenter."""
