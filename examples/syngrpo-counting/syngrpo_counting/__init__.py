"""syngrpo-counting: "How many <shape>s are there?" as a syngrpo task plugin.

The worked example of docs/extending.md.  ``plugin`` is the entry-point module
(cheap to import); ``task`` holds :class:`CountingTask`.
"""

__version__ = "0.1.0"
