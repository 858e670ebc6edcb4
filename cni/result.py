"""CNI results: from the agent's endpoint model to each spec version's JSON, and back.

Pure functions over dicts (no sockets, no netlink), so every version's shape is tested
without an agent. One internal form, the 1.x shape (``interfaces``, ``ips`` with an
``interface`` index, ``routes``, ``dns``), sits in the middle: the agent's endpoint
becomes that form, the form is rendered for the config's ``cniVersion``, and a
``prevResult`` in any version is parsed back into it for chaining and CHECK.
"""

from __future__ import annotations

from . import version

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

    Doc = dict[str, Any]

# Route scope numbers as in rtnetlink; 1.1.0 results may carry them.
SCOPE_LINK = 253
SCOPE_UNIVERSE = 0
_FAMILIES = (("ipv4", 4), ("ipv6", 6))


def family_of(address: str) -> int:
    """4 or 6 from the text alone (the ipaddress module is too slow to import per exec)."""
    return 6 if ":" in address else 4


def _host_prefix(address: str) -> str:
    """The agent answers single-host addresses; CNI wants them with their prefix."""
    if "/" in address:
        return address
    return f"{address}/128" if family_of(address) == 6 else f"{address}/32"


def from_endpoint(ep: Doc, ifname: str, netns: str, dns: Doc | None = None) -> Doc:
    """The agent's endpoint model -> the internal (1.x-shaped) result.

    ``interfaces`` lists the host-side veth first, then the container's interface
    with its ``sandbox``; every IP points at the container's interface, which is what
    chained plugins (portmap, bandwidth, tuning) look for.
    """
    interfaces: list[Doc] = []
    if ep.get("host-interface"):
        host: Doc = {"name": ep["host-interface"]}
        if ep.get("host-mac"):
            host["mac"] = ep["host-mac"]
        interfaces.append(host)
    container: Doc = {"name": ep.get("interface-name") or ifname}
    if ep.get("mac"):
        container["mac"] = ep["mac"]
    container["sandbox"] = netns
    interfaces.append(container)
    index = len(interfaces) - 1

    addressing = ep.get("addressing") or {}
    gateways = ep.get("gateway") or {}
    ips = []
    for key, _family in _FAMILIES:
        if addressing.get(key):
            ip: Doc = {"address": _host_prefix(addressing[key]), "interface": index}
            if gateways.get(key):
                ip["gateway"] = gateways[key]
            ips.append(ip)

    routes = []
    for route in ep.get("routes") or []:
        out: Doc = {"dst": route["dst"]}
        if route.get("gateway"):
            out["gw"] = route["gateway"]
        if route.get("scope") == "link" or not route.get("gateway"):
            # A route without a gateway (to the router's /32 or /128) is on-link in both
            # families; the kernel merely keeps IPv6 routes at universe scope.
            out["scope"] = SCOPE_LINK
        routes.append(out)

    result: Doc = {"interfaces": interfaces, "ips": ips, "routes": routes}
    if dns:
        result["dns"] = dns
    return result


def _copy_dns(dns: Doc | None) -> Doc:
    return {k: list(v) if isinstance(v, list) else v for k, v in (dns or {}).items()}


def expresses_link_routes(cni_version: str) -> bool:
    """Route ``scope`` exists from 1.1.0 on. Before, a route without ``gw`` means "via
    the default gateway" to a reader of the spec, so an on-link route cannot be said."""
    return version.parse(cni_version) >= (1, 1, 0)


def _is_link_route(route: Doc) -> bool:
    return route.get("scope") == SCOPE_LINK and not route.get("gw")


def _routes_out(routes: list[Doc], cni_version: str) -> list[Doc]:
    """Routes in ``cni_version``'s terms: on-link routes only where a scope can mark
    them (an earlier plugin's routes, which carry no scope before 1.1, all stay)."""
    scoped = expresses_link_routes(cni_version)
    out = []
    for route in routes:
        if not scoped and _is_link_route(route):
            continue
        doc: Doc = {"dst": route["dst"]}
        if route.get("gw"):
            doc["gw"] = route["gw"]
        if scoped and "scope" in route:
            doc["scope"] = route["scope"]
        out.append(doc)
    return out


def render(result: Doc, cni_version: str) -> Doc:
    """The internal result in the JSON shape of ``cni_version``."""
    if version.is_legacy(cni_version):
        return _render_legacy(result, cni_version)
    with_version = version.ips_carry_version(cni_version)
    ips = []
    for ip in result.get("ips", []):
        out: Doc = {}
        if with_version:
            out["version"] = str(family_of(ip["address"]))
        out["address"] = ip["address"]
        if ip.get("gateway"):
            out["gateway"] = ip["gateway"]
        if ip.get("interface") is not None:
            out["interface"] = ip["interface"]
        ips.append(out)
    doc: Doc = {
        "cniVersion": cni_version,
        "interfaces": [dict(i) for i in result.get("interfaces", [])],
        "ips": ips,
        "routes": _routes_out(result.get("routes", []), cni_version),
        "dns": _copy_dns(result.get("dns")),
    }
    return doc


def _render_legacy(result: Doc, cni_version: str) -> Doc:
    """0.1.0/0.2.0: one ``ip4`` and one ``ip6`` block, routes split by family."""
    doc: Doc = {"cniVersion": cni_version}
    for key, family in (("ip4", 4), ("ip6", 6)):
        ip = next((i for i in result.get("ips", []) if family_of(i["address"]) == family),
                  None)
        if ip is None:
            continue
        block: Doc = {"ip": ip["address"]}
        if ip.get("gateway"):
            block["gateway"] = ip["gateway"]
        routes = _routes_out([r for r in result.get("routes", [])
                              if family_of(r["dst"]) == family], cni_version)
        if routes:
            block["routes"] = routes
        doc[key] = block
    doc["dns"] = _copy_dns(result.get("dns"))
    return doc


def parse(doc: Doc, cni_version: str) -> Doc:
    """A result in ``cni_version``'s shape (a prevResult) -> the internal form."""
    if version.is_legacy(cni_version):
        ips, routes = [], []
        for key in ("ip4", "ip6"):
            block = doc.get(key)
            if isinstance(block, dict) and block.get("ip"):
                ip: Doc = {"address": block["ip"]}
                if block.get("gateway"):
                    ip["gateway"] = block["gateway"]
                ips.append(ip)
                routes.extend(dict(r) for r in block.get("routes") or [])
        return {"interfaces": [], "ips": ips, "routes": routes, "dns": doc.get("dns") or {}}
    ips = []
    for ip in doc.get("ips") or []:
        out = {k: v for k, v in ip.items() if k != "version"}
        ips.append(out)
    return {
        "interfaces": [dict(i) for i in doc.get("interfaces") or []],
        "ips": ips,
        "routes": [dict(r) for r in doc.get("routes") or []],
        "dns": dict(doc.get("dns") or {}),
    }


def merge(prev: Doc, ours: Doc) -> Doc:
    """Our result appended to an earlier plugin's, as the spec asks of a chained plugin.

    Our interface indexes shift by the number of interfaces already listed.
    """
    shift = len(prev.get("interfaces", []))
    ips = list(prev.get("ips", []))
    for ip in ours.get("ips", []):
        moved = dict(ip)
        if moved.get("interface") is not None:
            moved["interface"] += shift
        ips.append(moved)
    return {
        "interfaces": [*prev.get("interfaces", []), *ours.get("interfaces", [])],
        "ips": ips,
        "routes": [*prev.get("routes", []), *ours.get("routes", [])],
        "dns": prev.get("dns") or ours.get("dns") or {},
    }
