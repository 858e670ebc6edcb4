"""Kubernetes glue: pod labels from the API server become ``k8s:`` endpoint labels."""
