"""CHECK's verdict: does the container's network still match what ADD reported?

Pure comparison of three views of one attachment: the ``prevResult`` the runtime
cached, the agent's endpoint, and what the container's netns actually holds, which the
agent reads from the kernel when asked (``GET /v1/endpoint/{id}/interface``). Each
mismatch is one sentence, so the runtime's event says what drifted rather than just
"CHECK failed".
"""

from __future__ import annotations

from .result import family_of

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from typing import Any

    Doc = dict[str, Any]


def _norm_prefix(text: str) -> str:
    """``10.0.0.1`` -> ``10.0.0.1/32``; ``default`` stays for the caller to expand."""
    if "/" in text:
        addr, _, plen = text.partition("/")
        return f"{addr.lower()}/{int(plen)}"
    return f"{text.lower()}/128" if family_of(text) == 6 else f"{text}/32"


def _route_key(dst: str, gw: str | None) -> tuple[str, str]:
    return _norm_prefix(dst), (gw or "").lower()


def observed_from_agent(doc: Doc) -> Doc:
    """The agent's reading of the container interface (``GET
    /v1/endpoint/{id}/interface``) -> the plain view ``compare`` takes."""
    if not doc.get("exists"):
        return {"exists": False}
    return {
        "exists": True,
        "up": bool(doc.get("up")),
        "mac": (doc.get("mac") or "").lower(),
        "addresses": {_norm_prefix(f"{a['address']}/{a['prefixlen']}")
                      for a in doc.get("addresses") or []},
        "routes": {_route_key(r["dst"], r.get("gateway")) for r in doc.get("routes") or []},
    }


def _our_interface(prev: Doc, ifname: str, netns: str) -> tuple[int | None, Doc | None]:
    for i, iface in enumerate(prev.get("interfaces", [])):
        if iface.get("name") == ifname and iface.get("sandbox") == netns:
            return i, iface
    return None, None


def compare(prev: Doc, endpoint: Doc, observed: Doc, ifname: str, netns: str,
            link_routes_in_result: bool = True) -> list[str]:
    """Problems found, empty when the attachment is intact.

    ``prev`` is the prevResult in the internal form (see :func:`result.parse`). Before
    CNI 1.1 a result cannot state an on-link route (``link_routes_in_result`` False),
    so the agent's routes without a gateway are looked for only in the netns.
    """
    problems: list[str] = []
    index, iface = _our_interface(prev, ifname, netns)
    if iface is None:
        problems.append(f"prevResult lists no interface {ifname!r} in sandbox {netns}")
    want_addrs = {_norm_prefix(a) for a in (endpoint.get("addressing") or {}).values() if a}
    prev_addrs = {_norm_prefix(ip["address"]) for ip in prev.get("ips", [])
                  if index is None or ip.get("interface") in (None, index)}
    if prev_addrs != want_addrs:
        problems.append(f"prevResult addresses {sorted(prev_addrs)} differ from the agent's "
                        f"endpoint {sorted(want_addrs)}")
    if endpoint.get("state") == "disconnecting":
        problems.append(f"the agent is disconnecting endpoint {endpoint.get('id')}")
    want_routes = {_route_key(r["dst"], r.get("gateway")) for r in endpoint.get("routes") or []}
    prev_routes = {_route_key(r["dst"], r.get("gw")) for r in prev.get("routes", [])}
    in_result = want_routes if link_routes_in_result else {r for r in want_routes if r[1]}
    missing_prev = in_result - prev_routes
    if missing_prev:
        problems.append(f"prevResult lacks the agent's routes {sorted(missing_prev)}")

    if not observed.get("exists"):
        problems.append(f"interface {ifname!r} does not exist in {netns}")
        return problems
    if not observed.get("up"):
        problems.append(f"interface {ifname!r} in {netns} is down")
    if iface and iface.get("mac") and iface["mac"].lower() != observed.get("mac"):
        problems.append(f"interface {ifname!r} has MAC {observed.get('mac')}, "
                        f"prevResult says {iface['mac']}")
    missing_addrs = want_addrs - observed.get("addresses", set())
    if missing_addrs:
        problems.append(f"interface {ifname!r} lacks addresses {sorted(missing_addrs)}")
    missing_routes = want_routes - observed.get("routes", set())
    if missing_routes:
        problems.append(f"{netns} lacks routes {sorted(missing_routes)} via {ifname!r}")
    return problems
