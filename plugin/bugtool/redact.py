"""Secrets out of everything the bugtool writes.

Bug reports get attached to public issues: bearer tokens, passwords, private keys and
kubeconfig credentials must not travel with them. Redaction works on text (JSON, YAML,
command output) by key names and by the shape of PEM blocks, so it also catches secrets
in places nobody listed.
"""

from __future__ import annotations

import re

MARK = "[redacted]"

_SECRET_KEYS = (
    "token", "password", "passwd", "secret", "client-key-data", "client-certificate-data",
    "private-key", "private_key", "key-data", "authorization", "bearer",
)
_KEY_RE = "|".join(re.escape(k) for k in _SECRET_KEYS)
# "key": "value" (JSON), key: value (YAML), key=value (env, args)
_JSON_PAIR = re.compile(rf'("(?:[^"]*(?:{_KEY_RE})[^"]*)"\s*:\s*)"[^"]*"', re.IGNORECASE)
_YAML_PAIR = re.compile(rf"^(\s*[-\w.]*(?:{_KEY_RE})[-\w.]*\s*:\s*)(\S.*)$",
                        re.IGNORECASE | re.MULTILINE)
_ENV_PAIR = re.compile(rf"\b([A-Z0-9_]*(?:{_KEY_RE.upper()})[A-Z0-9_]*=)\S+", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                  re.DOTALL)
_AUTH_HEADER = re.compile(r"(Authorization:\s*)(\S+\s+)?\S+", re.IGNORECASE)


def redact(text: str) -> str:
    text = _PEM.sub(MARK, text)
    text = _JSON_PAIR.sub(lambda m: f'{m.group(1)}"{MARK}"', text)
    text = _YAML_PAIR.sub(lambda m: f"{m.group(1)}{MARK}", text)
    text = _ENV_PAIR.sub(lambda m: f"{m.group(1)}{MARK}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{MARK}", text)
    return text
