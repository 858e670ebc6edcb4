"""cilium-py: BPF-based container networking and identity-based policy."""

__version__ = "0.1.0"
