"""``python -m syngrpo.synthesis.server [serve options]``: the same as ``syngrpo serve`` (used by spawn)."""

import sys

from syngrpo.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
