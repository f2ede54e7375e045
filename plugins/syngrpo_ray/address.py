"""Joining a Ray cluster that listens on 127.0.0.1: settled here, before Ray is imported.

Ray treats a loopback address as a slip: ``ray.init(address="127.0.0.1:6379")`` (and ``localhost``) is
rewritten to the machine's outward address (``ray._private.services.resolve_ip_for_localhost``), so a
driver cannot join a head started with ``--node-ip-address=127.0.0.1``: it knocks on the outward address,
where nothing of that cluster listens, or registers as a node of that address, which the cluster does not
have.  The switch that keeps loopback as loopback is ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and Ray reads
it once, when ``ray`` is first imported (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``).

So every place of this plugin that imports Ray to connect calls :func:`keep_loopback` first: for a
loopback address (given, or in ``$RAY_ADDRESS``) it sets the switch unless the environment already
decides it; if Ray was imported earlier in this process with the switch on, no setting can help any more,
and the error says what to set.  Any other address is left to Ray's own rules: the switch would make a
node of a real cluster register as 127.0.0.1 and lose its own raylet.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from syngrpo.errors import ConfigError

#: Ray's switch (read at ``import ray``): ``0`` keeps 127.0.0.1 as the node's address
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def target(address: str | None) -> str | None:
    """The address ``ray.init(address=...)`` would try first: the given one, else ``$RAY_ADDRESS``."""
    if address in (None, "", "auto"):
        return os.environ.get("RAY_ADDRESS") or None
    return address


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or a bare host) names this machine's loopback interface."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keep_loopback(address: str | None) -> None:
    """Before ``import ray``: make a loopback ``address`` reachable (see the module doc)."""
    where = target(address)
    if where is None or not is_loopback(where):
        return
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        if getattr(constants, "ENABLE_RAY_CLUSTER", False):
            raise ConfigError(f"the Ray cluster at {where} listens on loopback, but Ray was imported in this "
                              f"process before the switch that keeps 127.0.0.1 was set; start the process with "
                              f"{LOOPBACK_SWITCH}=0 in its environment, or give the cluster's outward address")
        return
    os.environ.setdefault(LOOPBACK_SWITCH, "0")
