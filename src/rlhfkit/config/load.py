"""YAML file + `--set a.b=c` overrides -> a validated RunConfig, or one clear error line.

Validation happens here, before any model or data is touched: a wrong key, type or value
is reported with its dotted path (`ppo.mini_batch_size: ...`) and the file it came from.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rlhfkit.config.stages import RunConfig


class ConfigError(ValueError):
    """A config problem, phrased as one line for the terminal."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` as a string (it wants `1.0e-5`); configs are strictly typed, so the
    YAML 1.2 float forms are read as floats here. `8` stays an int, `"8"` a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. sft.optim.learning_rate=3e-5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key segment")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    try:
        node[parts[-1]] = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key.strip()}: {raw!r} is not valid YAML ({getattr(err, 'problem', None) or err}); "
                          "quote strings that hold YAML syntax, e.g. --set 'key=\"a: b\"'") from None


def dotted_items(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as `{"ppo.kl.kl_coef": value, ...}` (the keys `--set` takes); an empty
    mapping stays one value, so `{}` and a missing section still differ."""
    if isinstance(data, Mapping) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(dotted_items(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{path}: {msg}")
    first = lines[0]
    more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:])})" if len(lines) > 1 else ""
    return f"{source}: {first}{more}"


def default_config_path(name: str = "default") -> Path:
    """Path of a preset shipped inside the package (`rlhfkit/presets/NAME.yaml`); ConfigError naming the
    presets there when there is no such one."""
    presets = Path(str(resources.files("rlhfkit") / "presets"))
    path = presets / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in presets.glob("*.yaml")))
        raise ConfigError(f"--preset {name}: no such bundled preset (known: {known})")
    return path


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read, override and validate. Raises ConfigError with a one-line message."""
    data = _read_yaml(Path(path)) if path is not None else {}
    for assignment in overrides:
        apply_override(data, assignment)
    source = str(path) if path is not None else "config"
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def resolve_output_dir(cfg: RunConfig, now: _dt.datetime | None = None) -> Path:
    """Fill `{timestamp}` in output_dir (an empty one, e.g. `-o "$UNSET"`, is refused: it would mean the cwd)."""
    if not cfg.output_dir.strip():
        raise ConfigError("output_dir is empty: give a run directory (-o runs/x; -o . for the working directory)")
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(cfg.output_dir.replace("{timestamp}", stamp)).expanduser()


def save_resolved(cfg: RunConfig, path: Path) -> None:
    """Write the fully resolved config (every default spelled out) next to the run's outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
