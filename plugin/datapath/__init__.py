"""The BPF datapath: programs on each endpoint's host veth, configured by pinned maps.

Modules: ``datapath`` (the ``Datapath`` facade the agent uses), ``loader``
(compile once with bcc, reuse pins), ``attach`` (tc clsact direct-action),
``maps`` (C layouts and pinned map access), ``events`` (drop perf events),
``bpfsys`` (the bpf(2) calls), ``smoke`` (toolchain smoke test).

Importing this package does not import bcc; ``Datapath.start()`` does.
"""

from .datapath import Datapath, EndpointDatapathInfo, numeric_endpoint_id
from .loader import DatapathError, DatapathOptions
from .maps import DropReason, Metric

__all__ = [
    "Datapath",
    "DatapathError",
    "DatapathOptions",
    "DropReason",
    "EndpointDatapathInfo",
    "Metric",
    "numeric_endpoint_id",
]
