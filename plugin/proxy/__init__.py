"""L7 proxies: the redirect machinery every proxy shares, and the proxies themselves.

A port whose rules carry L7 rules (``toPorts[].rules``) resolves to a *redirect*
verdict. The datapath steers new connections that hit such an entry into a local
proxy's transparent listener; the proxy enforces the rules per request and emits one
L7 record per request to the monitor. Protocol-neutral pieces live here; each proxy
plugs into them.

The interface a proxy (Envoy for HTTP/gRPC in :mod:`.envoy`, the Kafka proxy in
``kafka/``) implements and uses:

* **Parser names.** A proxy serves one or more parsers (``"http"``, ``"kafka"``),
  the names of :class:`cilium_py.policy.L7Rules` fields. The policy resolver turns a
  port with rules of parser P into a redirect only while a proxy for P is
  registered (``ProxyManager.register``); otherwise it enforces the port at L4 and
  says so.

* **Proxy ports** (:mod:`.ports`). One listening port per ``(parser, direction)``,
  allocated by :class:`~.ports.ProxyPorts` from ``--proxy-port-range`` and kept in
  the store, so a restarted agent (and a proxy that survived it) use the same port
  the pinned policy map already names. The policy map value of a redirect entry is
  ``{proxy_port, action=redirect}``; the programs assign new connections to the
  socket listening on ``proxy_port`` (``bpf_sk_assign``) and mark them (see
  :mod:`.marks`), so the proxy must listen with ``IP_TRANSPARENT`` on the wildcard
  address of that port, IPv4 and IPv6, in the agent's network namespace. The
  original destination is then simply the accepted socket's ``getsockname()``.

* **Source identity.** The proxy learns who is talking from the peer address of the
  accepted socket: ``ProxyManager.identity_of(address)`` maps it through the same
  ipcache the datapath uses (local endpoints, CIDR identities, the node, remote
  endpoints), world when unknown. A proxy needing address sets per identity (Envoy's
  RBAC principals) gets them from :func:`.addresses.identity_address_sets`.

* **Upstream.** A proxy connects upstream from the *client's* address
  (``IP_TRANSPARENT`` bind to the peer address, port 0) with ``SO_MARK`` set to
  :data:`.marks.MARK_FROM_PROXY_INGRESS` or ``..._EGRESS``. The datapath then
  applies the destination's policy to the client's real identity (no identity
  spoofing through the proxy), does not redirect an ingress-proxied connection a
  second time, and sends the replies back to the proxy's socket. Upstream
  connections to addresses outside the endpoint pools leave from the node's own
  address instead (they are masqueraded anyway, and a reply would not find its way
  back to a transparent socket).

* **Policy.** ``ProxyManager`` hands each proxy, whenever policy or the ipcache
  changes, the redirect entries of every endpoint for its parsers
  (:class:`~.redirects.Redirect` objects: endpoint, addresses, direction,
  identity, port, protocol, L7 rules). A proxy applies them without closing
  established connections: the next request on a kept-alive connection gets the new
  verdict.

* **L7 records** (:mod:`.records`). A proxy reports each request with
  ``ProxyManager.record(L7Record(...))``: direction, source and destination address
  and port, verdict (``forwarded``/``denied``/``error``), the protocol's own fields
  (HTTP: method, path, host, status; Kafka: api key, topic, ...). The manager fills
  in endpoints and identities and publishes ``{"type": "l7", ...}`` events that
  ``cilium-py monitor --type l7`` shows.

* **Lifecycle.** ``start()`` when the first redirect for one of its parsers appears,
  ``update(redirects)`` on every change, ``stop()`` on agent stop; ``health()`` for
  ``/v1/healthz``. A proxy that dies is restarted by its own supervisor.
"""
