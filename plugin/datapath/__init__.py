"""The BPF datapath: programs on each endpoint's host veth, configured by pinned maps.

Modules: ``contract`` (``DatapathContract``: what the agent may call, typed),
``datapath`` (the ``Datapath`` facade that implements it), ``endpoint``
(what the datapath needs about an endpoint), ``loader`` (compile once with bcc,
reuse pins), ``attach`` (tc clsact direct-action), ``maps`` (C layouts and
pinned map access), ``policy`` (resolved policy -> policy map entries and
endpoint flags), ``ipcache`` (prefixes -> LPM keys), ``tables`` (diffing writers
for the policy map and the ipcache), ``conntrack`` (CT rows), ``events`` (drop
perf events), ``bpfsys`` (the bpf(2) calls), ``smoke`` (toolchain smoke test).

Importing this package does not import bcc; ``Datapath.start()`` does.
"""

from .contract import DatapathContract, DatapathEndpoint, EndpointRecord
from .datapath import Datapath
from .endpoint import EndpointDatapathInfo, numeric_endpoint_id
from .loader import DatapathError, DatapathOptions
from .maps import DropReason, Metric

__all__ = [
    "Datapath",
    "DatapathContract",
    "DatapathEndpoint",
    "DatapathError",
    "DatapathOptions",
    "DropReason",
    "EndpointDatapathInfo",
    "EndpointRecord",
    "Metric",
    "numeric_endpoint_id",
]
