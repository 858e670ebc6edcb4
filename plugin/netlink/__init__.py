"""Rtnetlink helpers shared by the endpoint plumbing and the datapath.

Why a package of its own: both ``endpoint`` (veths, addresses, routes) and ``datapath``
(qdiscs and tc filters) speak rtnetlink. Kept here, neither imports the other for it,
and the package depends on nothing of the agent but its exception family
(``cilium_py.errors``).

- ``rtnl``: constants, the mapping of netlink errors to the agent's exceptions
  (``kernel_step``), and small pyroute2 queries (links, addresses, routes, neighbours).
- ``nlbatch``: requests built as pyroute2 messages and sent several per write.
"""
