"""Numeric identities for label sets, allocated in the store."""

from .allocator import IdentityAllocator

__all__ = ["IdentityAllocator"]
