"""Typed accessors over parsed TOML: each returns the type it names or fails naming file, key and problem.

Keys are spelled as the operator reads them (``routes[0].api_keys[1].secret``): ``key`` is the
table's own key ("" at the top level) and ``name`` the entry inside it. A secret reference is
resolved in one place (:meth:`Reader.resolve_secret`) and its value checked in another
(:meth:`Reader.check_secret`): a reader that must not read secrets (a command that only inspects
the configuration) overrides these two.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import NoReturn, TypeAlias

from ..addresses import Network, parse_networks
from ..errors import ConfigError

__all__ = ["MISSING", "UNRESOLVED_SECRET", "InspectionReader", "Missing", "Reader", "SecretCheck", "Table"]

Table: TypeAlias = Mapping[str, object]
#: a secret's problem (or None when it is fine), e.g. too short, not base64
SecretCheck: TypeAlias = Callable[[str], str | None]


class Missing:
    """The default of a required entry: absent, it is an error."""


MISSING = Missing()


class Reader:
    """One configuration file's reader: accessors that fail with a :class:`ConfigError`."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(str(self.source), key, problem)

    def only_keys(self, raw: Table, key: str, allowed: Collection[str]) -> None:
        for name in raw:
            if name not in allowed:
                self.fail(_where(key, name), f"unknown key (allowed here: {', '.join(sorted(allowed))})")

    def _get(self, raw: Table, key: str, name: str, required: bool) -> object:
        if name not in raw and required:
            self.fail(_where(key, name), "missing")
        return raw.get(name)

    def string(self, raw: Table, key: str, name: str, default: str | Missing = MISSING) -> str:
        if name not in raw and isinstance(default, str):
            return default
        value = self._get(raw, key, name, required=True)
        if not isinstance(value, str):
            self._wrong_type(key, name, "a string", value)
        return value

    def optional_string(self, raw: Table, key: str, name: str) -> str | None:
        return self.string(raw, key, name) if name in raw else None

    def string_list(self, raw: Table, key: str, name: str) -> tuple[str, ...]:
        value = raw.get(name, [])
        if not isinstance(value, list):
            self._wrong_type(key, name, "a list of strings", value)
        if not all(isinstance(item, str) for item in value):
            self.fail(f"{key}.{name}", "must be a list of strings")
        return tuple(value)

    def choice(
        self, raw: Table, key: str, name: str, allowed: tuple[str, ...], default: str | Missing = MISSING
    ) -> str:
        value = self.string(raw, key, name, default)
        if value not in allowed:
            self.fail(f"{key}.{name}", f"must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value

    def path(
        self, raw: Table, key: str, name: str, must_exist: bool = False, default: str | Missing = MISSING
    ) -> Path:
        resolved = (self.source.parent / Path(self.string(raw, key, name, default)).expanduser()).resolve()
        if must_exist and not resolved.is_file():
            self.fail(f"{key}.{name}", f"file not found: {resolved}")
        return resolved

    def optional_path(self, raw: Table, key: str, name: str, must_exist: bool = False) -> Path | None:
        return self.path(raw, key, name, must_exist) if name in raw else None

    def integer(self, raw: Table, key: str, name: str, default: int, minimum: int) -> int:
        value = self.optional_integer(raw, key, name, minimum)
        return default if value is None else value

    def optional_integer(self, raw: Table, key: str, name: str, minimum: int) -> int | None:
        if name not in raw:
            return None
        value = raw[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(_where(key, name), f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def number(self, raw: Table, key: str, name: str, default: float, minimum: float) -> float:
        value = raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            self.fail(f"{key}.{name}", f"must be a number >= {minimum}, got {value!r}")
        return float(value)

    def boolean(self, raw: Table, key: str, name: str, default: bool) -> bool:
        value = raw.get(name, default)
        if not isinstance(value, bool):
            self._wrong_type(key, name, "true or false", value)
        return value

    def networks(self, raw: Table, key: str, name: str, default: tuple[Network, ...]) -> tuple[Network, ...]:
        if name not in raw:
            return default
        items = self.string_list(raw, key, name)
        try:
            return parse_networks(items)
        except ValueError as exc:
            self.fail(f"{key}.{name}", f"not an IP address or CIDR: {exc}")

    def as_table(self, value: object, key: str, problem: str) -> Table:
        """``value`` if it is a table; else fail at ``key`` with ``problem`` (which shows an example)."""
        if not isinstance(value, dict):
            self.fail(key, problem)
        return value

    def table(self, raw: Table, name: str) -> Table:
        """A top-level ``[name]`` table, empty when absent."""
        value = raw.get(name, {})
        if not isinstance(value, dict):
            self._wrong_type("", name, "a table", value)
        return value

    def table_list(self, raw: Table, name: str, required: bool = False) -> list[Table]:
        """A top-level ``[[name]]`` array of tables."""
        value = self._get(raw, "", name, required) if required else raw.get(name, [])
        if not isinstance(value, list):
            self._wrong_type("", name, f"an array of tables ([[{name}]])", value)
        if required and not value:
            self.fail(name, f"at least one [[{name}]] table is needed")
        if not all(isinstance(item, dict) for item in value):
            self.fail(name, f"must be an array of tables ([[{name}]])")
        return value

    def table_list_at(self, raw: Table, key: str, name: str) -> list[Table]:
        """A list of inline tables inside a table, e.g. ``api_keys = [{ key = "...", ... }]``."""
        value = raw.get(name, [])
        if not isinstance(value, list):
            self._wrong_type(key, name, "a list of tables", value)
        if not all(isinstance(item, dict) for item in value):
            self.fail(f"{key}.{name}", "must be a list of tables")
        return value

    def secret(self, raw: Table, key: str, name: str, check: SecretCheck | None = None) -> str | None:
        """A secret comes from ``{ env = "VAR" }`` or ``{ file = "path" }``, never inline."""
        if name not in raw:
            return None
        where = f"{key}.{name}"
        return self.check_secret(self.resolve_secret(raw[name], where), where, check)

    def secret_list(
        self, raw: Table, key: str, name: str, check: SecretCheck | None = None
    ) -> tuple[str, ...]:
        """Every secret of the list resolved first, then each checked (the first problem is reported)."""
        value = raw.get(name, [])
        if not isinstance(value, list):
            self._wrong_type(key, name, 'a list like [{ env = "VAR" }, { file = "/path" }]', value)
        where = f"{key}.{name}"
        secrets = [self.resolve_secret(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(self.check_secret(secret, f"{where}[{i}]", check) for i, secret in enumerate(secrets))

    def secret_reference(self, value: object, where: str) -> tuple[str, str]:
        """``("env", VAR)`` or ``("file", PATH)``: the shape of a secret reference, checked."""
        if isinstance(value, str):
            self.fail(where, 'secrets are not accepted inline; use { env = "VAR" } or { file = "/path" }')
        if not isinstance(value, dict) or len(value) != 1 or not set(value) <= {"env", "file"}:
            self.fail(where, 'must be { env = "VAR" } or { file = "/path" }')
        ((kind, ref),) = value.items()
        if not isinstance(ref, str) or not ref:
            self.fail(f"{where}.{kind}", "must be a non-empty string")
        return kind, ref

    def resolve_secret(self, value: object, where: str) -> str:
        """The secret a reference names: the environment variable's value or the file's content."""
        kind, ref = self.secret_reference(value, where)
        if kind == "env":
            secret = os.environ.get(ref, "")
            if not secret:
                self.fail(f"{where}.env", f"environment variable {ref} is not set or empty")
            return secret
        path = (self.source.parent / Path(ref).expanduser()).resolve()
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.fail(f"{where}.file", f"cannot read secret file {path}: {exc.strerror or exc}")
        if not secret:
            self.fail(f"{where}.file", f"secret file {path} is empty")
        return secret

    def check_secret(self, secret: str, where: str, check: SecretCheck | None) -> str:
        """The secret, if ``check`` finds no problem with it (too short, not base64, ...)."""
        problem = check(secret) if check is not None else None
        if problem is not None:
            self.fail(where, problem)
        return secret

    def _wrong_type(self, key: str, name: str, label: str, value: object) -> NoReturn:
        self.fail(_where(key, name), f"must be {label}, got {type(value).__name__}")


#: what an :class:`InspectionReader` puts where a secret would be (never used to verify anything)
UNRESOLVED_SECRET = "<secret not read>"


class InspectionReader(Reader):
    """Reads a configuration without reading its secrets: for commands that only look at the store.

    ``events list`` on a server whose secrets are in the service's environment (not the shell's)
    failed with "environment variable ... is not set". A reference must still be well formed; its
    value is :data:`UNRESOLVED_SECRET` and is not checked.
    """

    def resolve_secret(self, value: object, where: str) -> str:
        self.secret_reference(value, where)
        return UNRESOLVED_SECRET

    def check_secret(self, secret: str, where: str, check: SecretCheck | None) -> str:
        return secret


def _where(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name
