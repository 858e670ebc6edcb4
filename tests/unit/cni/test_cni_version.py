"""Version negotiation: what VERSION answers and which configs each command accepts."""

from __future__ import annotations

import pytest

from cilium_py.cni import version
from cilium_py.cni.errors import INCOMPATIBLE_VERSION, CNIError


def test_supported_list_is_exactly_the_seven_spec_versions() -> None:
    assert version.SUPPORTED == ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    assert version.LATEST == "1.1.0"


@pytest.mark.parametrize("requested", ["0.2.0", "0.4.0", "1.0.0", "1.1.0"])
def test_version_info_answers_in_the_requested_version(requested: str) -> None:
    info = version.version_info(requested)
    assert info == {"cniVersion": requested, "supportedVersions": list(version.SUPPORTED)}


@pytest.mark.parametrize("requested", [None, "9.9.9", "", "garbage"])
def test_version_info_falls_back_to_latest(requested: str | None) -> None:
    assert version.version_info(requested)["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("bad", ["1.2.0", "0.5.0", "2.0.0", "1.0", "v1.0.0", "1.0.0-rc1", 1])
def test_unsupported_or_malformed_versions_are_code_1(bad: object) -> None:
    with pytest.raises(CNIError) as exc:
        version.require_supported(bad)  # type: ignore[arg-type]
    assert exc.value.code == INCOMPATIBLE_VERSION


@pytest.mark.parametrize("command,ok,refused", [
    ("CHECK", ["0.4.0", "1.0.0", "1.1.0"], ["0.1.0", "0.2.0", "0.3.0", "0.3.1"]),
    ("GC", ["1.1.0"], ["0.4.0", "1.0.0"]),
    ("STATUS", ["1.1.0"], ["0.3.1", "1.0.0"]),
    ("ADD", list(version.SUPPORTED), []),
    ("DEL", list(version.SUPPORTED), []),
])
def test_commands_exist_from_their_spec_version(command: str, ok: list[str],
                                                 refused: list[str]) -> None:
    for v in ok:
        version.require_command_allowed(command, v)
    for v in refused:
        with pytest.raises(CNIError) as exc:
            version.require_command_allowed(command, v)
        assert exc.value.code == INCOMPATIBLE_VERSION


def test_result_shape_predicates() -> None:
    assert [version.is_legacy(v) for v in version.SUPPORTED] == [
        True, True, False, False, False, False, False]
    assert [version.ips_carry_version(v) for v in version.SUPPORTED] == [
        False, False, True, True, True, False, False]
