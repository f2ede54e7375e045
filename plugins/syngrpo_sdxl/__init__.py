"""Built-in plugin: the ``sdxl_controlnet`` synthesizer (needs ``pip install 'syngrpo[sdxl]'``)."""
