"""Read params.yaml and validate it, failing with one line that names the parameter.

OmegaConf, not PyYAML: `dvc exp run -S lr=2e-5` writes `2e-05`, which PyYAML reads as a string.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MISSING = object()  # a key or field that is not there (None is a value)


class ParamError(SystemExit):
    """A bad parameter: printed as one line on stderr, exit status 1, nothing written."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path} not found; run from the repository root")
    return OmegaConf.load(path)


def get(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key, or ParamError naming the missing key."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False, default=MISSING)
    if value is MISSING:
        raise ParamError(f"params.yaml has no '{key}'; add it (the repository's params.yaml has it)")
    return OmegaConf.to_object(value) if isinstance(value, DictConfig | list) else value


def per_env(cfg: DictConfig, key: str, env: str) -> str:
    """The dotted key that holds `key`'s value for `env`: `key` itself, or `key.<env>` where the param maps
    each env to its own value (base.steps: {gp_l: 600, gp_vl: 400, ...}), so errors name the entry."""
    value = get(cfg, key)
    if not isinstance(value, dict):
        return key
    if env not in value:
        raise ParamError(f"{key} has no entry for env={env}; add {key}.{env} or give one value for every env")
    return f"{key}.{env}"


def choice(cfg: DictConfig, key: str, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    value = get(cfg, key)
    if value not in allowed:
        raise ParamError(f"{key}={value!r} is not allowed; use one of: {', '.join(allowed)}")
    return value


def integer(cfg: DictConfig, key: str, minimum: int | None = None, maximum: int | None = None) -> int:
    return check_int(key, get(cfg, key), minimum, maximum)


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{key}={value!r} must be an integer")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ParamError(f"{key}={value} is out of range; it must be {bounds}")
    return value


def number(cfg: DictConfig, key: str, minimum: float | None = None, maximum: float | None = None) -> float:
    value = get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"{key}={value!r} must be a number")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise ParamError(f"{key}={value} is out of range; it must be in [{minimum}, {maximum}]")
    return float(value)


def flag(cfg, key: str) -> bool:
    value = get(cfg, key)
    if not isinstance(value, bool):
        raise ParamError(f"{key}={value!r} must be true or false")
    return value
