"""Connectivity health: a health endpoint per node and probes of every target."""

from .monitor import HealthMonitor

__all__ = ["HealthMonitor"]
