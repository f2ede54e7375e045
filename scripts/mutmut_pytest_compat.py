"""A pytest plugin that lets mutmut 3.8 record which tests reach which function under pytest 9.

mutmut's stats hook reads ``item._nodeid``, an attribute pytest 9 no longer keeps (it derives ``nodeid``
from ``_id``), so every stats run fails at the first test's teardown with ``AttributeError``.  This plugin
puts the attribute back on each collected item; ``scripts/mutate`` loads it (``-p`` in
``[tool.mutmut] pytest_add_cli_args``, with scripts/ on ``PYTHONPATH``).  Drop it when mutmut reads ``nodeid``.
"""

from __future__ import annotations


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if not hasattr(item, "_nodeid"):
            item._nodeid = item.nodeid
