"""JSON for processes that start often (every CNI exec): the C codec without ``json``'s imports.

``import json`` costs about 6 ms here, most of it compiling the ``re`` patterns of the
pure-Python fallback paths that the C accelerator (``_json``) makes unnecessary. That
is a third of the plugin's start-up, paid on every ADD and DEL. This module drives the
same C scanner and encoder that ``json.loads``/``json.dumps`` use, with the same
settings, and falls back to ``json`` itself where ``_json`` is missing or differs.
"""

from __future__ import annotations

TYPE_CHECKING = False  # the typing module costs start-up time; see invocation.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScanContext:
    """The attributes ``_json.make_scanner`` reads, set as ``json.loads`` sets them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_CONSTANTS.__getitem__)


def _unserializable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:
    import _json

    _scan = _json.make_scanner(_ScanContext())
    _encode_str = _json.encode_basestring_ascii
    _make_encoder = _json.make_encoder
except (ImportError, AttributeError, TypeError):  # another interpreter: use json itself
    _scan = None


def loads(data: bytes | str) -> Any:
    """Like ``json.loads`` (UTF-8 bytes or text); invalid input raises ``ValueError``."""
    if _scan is None:
        import json

        return json.loads(data)
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    start, end = 0, len(text)
    while start < end and text[start] in _WHITESPACE:
        start += 1
    try:
        value, pos = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    except Exception:  # noqa: BLE001 - any failure: let json itself produce the error
        # The C scanner raises its syntax errors as json.decoder.JSONDecodeError, which
        # it finds only when json.decoder is already imported (else a SystemError).
        import json

        return json.loads(text)
    while pos < end and text[pos] in _WHITESPACE:
        pos += 1
    if pos != end:
        raise ValueError(f"Extra data: char {pos}")
    return value


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Like ``json.dumps(obj, default=default)``: compact separators ``", "`` and ``": "``."""
    if _scan is None:
        import json

        return json.dumps(obj, default=default)
    encoder = _make_encoder({}, default or _unserializable, _encode_str, None, ": ", ", ",
                            False, False, True)
    return "".join(encoder(obj, 0))
