"""Built-in plugin: the ``ben2`` segmenter (BEN2 from its repository; see docs/data-server.md)."""
