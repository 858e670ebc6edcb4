"""The policy engine's errors.

A policy document is accepted or rejected whole, so validation collects every problem
at once and names each by its path in the document, letting the API answer 400 with
the full list and the CLI print it.
"""

from __future__ import annotations


class PolicyError(ValueError):
    """Base of the policy engine's errors (a ValueError: the input was wrong)."""


class PolicyValidationError(PolicyError):
    """A rejected policy document.

    ``fields`` maps a path such as ``[2].ingress[0].toPorts[0].ports[0].port`` (``[i]``
    is the rule index in the array; ``$`` is the document itself) to its message.
    """

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = dict(sorted(fields.items(), key=lambda item: _path_sort_key(item[0])))
        detail = "; ".join(f"{path}: {msg}" for path, msg in self.fields.items())
        super().__init__(f"invalid policy: {detail}")


def _path_sort_key(path: str) -> tuple[int, str]:
    """Order paths by rule index first so the report reads top to bottom."""
    if path.startswith("[") and "]" in path:
        head = path[1 : path.index("]")]
        if head.isdigit():
            return int(head), path
    return -1, path
