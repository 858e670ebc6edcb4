"""``cilium-py bugtool``: everything a maintainer asks for in a bug report, in one archive."""

from .collect import Collector, write_archive
from .redact import redact

__all__ = ["Collector", "redact", "write_archive"]
