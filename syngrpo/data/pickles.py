"""Reading the pickled annotations two datasets ship (the ``refer`` API's ``refs(unc).p``, D³'s ``*.pkl``), safely.

``pickle.load`` runs whatever code a file names, so a downloaded pickle is read here with an unpickler
that builds plain data only: dicts, lists, tuples, strings, bytes, numbers, booleans, ``None`` (which
need no class lookup at all) and numpy scalars (D³'s toolkit writes some); any other class stops the
read with an error naming it.  Python 2 pickles (``refs(unc).p`` was written by Python 2) store byte
strings: they are decoded as UTF-8, with undecodable bytes replaced, not fatal.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from syngrpo.errors import ConfigError

#: the only classes a plain-data pickle may name: numpy scalars (and the dtype they need), Python 3's bytes
#: written at protocol 2
_ALLOWED = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it names the class {module}.{name}; annotation pickles hold plain data only, so this file is not "
            "the dataset's (or was re-saved with other objects in it)")


def load_plain_pickle(path: str | Path) -> Any:
    """The plain data in a pickle file; a :class:`~syngrpo.errors.ConfigError` naming the file otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _PlainDataUnpickler(f, encoding="utf-8", errors="replace").load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"{path}: cannot be read as an annotation pickle: {exc}") from exc
