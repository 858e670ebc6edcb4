"""Which CNI spec versions the plugin speaks, and what each version allows.

Kept apart from the result formatting because the runtime negotiates versions before
anything else happens: VERSION answers from here alone, and every other command checks
the config's ``cniVersion`` here first so an unsupported version fails with code 1
before the agent is contacted.
"""

from __future__ import annotations

from .errors import INCOMPATIBLE_VERSION, CNIError

SUPPORTED: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED[-1]

# A config without ``cniVersion`` predates versioning: the spec reads it as 0.1.0
# (the Mesos isolator's own examples omit it).
DEFAULT_FOR_MISSING = "0.1.0"

# The first version in which each command exists.
_COMMAND_SINCE = {"ADD": "0.1.0", "DEL": "0.1.0", "CHECK": "0.4.0", "GC": "1.1.0",
                  "STATUS": "1.1.0"}


def parse(version: str) -> tuple[int, int, int]:
    """``"0.3.1"`` -> ``(0, 3, 1)``; raises code 1 for anything that is not x.y.z."""
    parts = version.split(".") if isinstance(version, str) else []
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CNIError(INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}",
                       "a version is three dot-separated numbers such as 1.0.0")
    return int(parts[0]), int(parts[1]), int(parts[2])


def require_supported(version: str) -> str:
    """Return ``version`` if this plugin speaks it, else raise the spec's code 1."""
    parse(version)
    if version not in SUPPORTED:
        raise CNIError(INCOMPATIBLE_VERSION,
                       f"incompatible CNI versions; config is {version!r}, "
                       f"plugin supports {list(SUPPORTED)}")
    return version


def require_command_allowed(command: str, version: str) -> None:
    """CHECK needs 0.4.0, GC and STATUS need 1.1.0: older configs get code 1."""
    since = _COMMAND_SINCE.get(command)
    if since is not None and parse(version) < parse(since):
        raise CNIError(INCOMPATIBLE_VERSION,
                       f"config version {version} does not allow {command}",
                       f"{command} exists from CNI spec {since} on")


def is_legacy(version: str) -> bool:
    """0.1.0 and 0.2.0 results use ``ip4``/``ip6`` instead of ``interfaces``/``ips``."""
    return parse(version) < (0, 3, 0)


def ips_carry_version(version: str) -> bool:
    """0.3.x and 0.4.0 results tag each IP with ``"version": "4"|"6"``; 1.x dropped it."""
    return (0, 3, 0) <= parse(version) < (1, 0, 0)


def version_info(requested: str | None) -> dict[str, object]:
    """The VERSION answer: exactly the supported list.

    It is written in the version the runtime asked about when we speak it, so an old
    runtime can read it, otherwise in the latest.
    """
    answer = requested if requested in SUPPORTED else LATEST
    return {"cniVersion": answer, "supportedVersions": list(SUPPORTED)}
