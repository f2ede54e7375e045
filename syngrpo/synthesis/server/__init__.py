"""The data server: an aiohttp app that synthesizes new training images (paper §3.3.1)."""
