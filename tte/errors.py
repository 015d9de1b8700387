"""User-facing errors: one line naming the node, the op and the way out.

Anything raised as `TteError` is a user mistake (bad file, unsupported op, bad spec, budget exceeded). The CLI
prints its message and exits with status 2; every other exception is a bug in tte.
"""

from __future__ import annotations


class TteError(Exception):
    """A user mistake, reported as one line and exit status 2."""

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None, hint: str | None = None):
        parts = []
        if node is not None or op is not None:
            parts.append(f"node '{node}' ({op})" if op else f"node '{node}'")
        parts.append(message)
        text = ": ".join(parts)
        if hint:
            text += f"; {hint}"
        super().__init__(text)
        self.node, self.op, self.hint = node, op, hint


class UnsupportedError(TteError):
    """An op, attribute or data type tte cannot handle."""


class ModelFormatError(TteError):
    """A malformed, truncated or non-quantized model file."""
