"""Prometheus metrics of the agent: what it holds, what the datapath counted, how long
its work took. See ``registry.py`` for the names and ``docs/metrics.md`` for the
reference."""

from .registry import AgentMetrics, NullMetrics

__all__ = ["AgentMetrics", "NullMetrics"]
