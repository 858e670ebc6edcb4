"""``cilium-py-cni``: the CNI plugin binary (filled in by the CNI issue).

For now it answers VERSION and refuses every other command with CNI error 4, so a
runtime that finds it gets a spec-shaped answer rather than a crash.
"""

from __future__ import annotations

import json
import os
import sys

SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        print(json.dumps({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}))
        return 0
    print(
        json.dumps(
            {
                "cniVersion": "1.1.0",
                "code": 4,
                "msg": f"CNI_COMMAND {command!r} is not supported yet",
                "details": "",
            }
        )
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
