"""`--allow`: which senders the OSC and HTTP servers serve (one rule for both).

`networks(allow)` turns the option's values (ip networks, or their text) into networks;
`address_allowed(host, networks)` says whether a sender's address is in one of them. An IPv4
address written in IPv6 form (``::ffff:10.0.0.7``, a dual-stack socket) counts as the IPv4 one;
a host that is not an IP address (a unix socket, a test client's name) is in no network.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(allow: Iterable[Any]) -> tuple[Network, ...]:
    return tuple(n if isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network))
                 else ipaddress.ip_network(n, strict=False) for n in allow)


def address_allowed(host: str | None, allow: Iterable[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    addresses = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        addresses.append(address.ipv4_mapped)
    return any(a in net for a in addresses for net in allow if a.version == net.version)
