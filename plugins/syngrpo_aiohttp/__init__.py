"""Built-in plugin: the ``aiohttp`` transport between the trainer and data servers."""
