"""Built-in plugin: the ``sam`` segmenter."""
