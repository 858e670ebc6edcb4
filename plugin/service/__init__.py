"""Services with virtual addresses, balanced by the datapath (bpf/lib/lb.h)."""

from .manager import ServiceManager
from .model import Service

__all__ = ["Service", "ServiceManager"]
