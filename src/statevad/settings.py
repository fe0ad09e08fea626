"""One settings path for every command: preset ← config file ← ``--set`` ← explicit flags.

``statevad prepare|train|test|score|demo`` each start from a base preset (the dataset's, the one a work
directory or a model file recorded), then apply, in this order and each overriding the one before:

1. ``--config FILE.toml``: tables named after the preset's sections with the fields of ``--set``, e.g.
   ``[box] score_thr = 0.3`` / ``[train] epochs = 6``; one file can serve every command, and a command reads
   only the sections it uses (prepare: box, flow, cube; train: model, train; test and score: score);
2. ``--set SECTION.FIELD=VALUE`` (repeatable);
3. the command's own flags (``--epochs``, ``--epsilon``, ...), when given.

Unknown sections or fields and values of the wrong type are one clear :class:`UserError` each.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from statevad.config import PRESETS, BoxConfig, CubeConfig, FlowConfig, Preset, get_preset, override
from statevad.errors import UserError

SECTIONS = ("box", "flow", "cube", "model", "train", "score")
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("box", "flow", "cube"),
    "train": ("model", "train"),
    "test": ("score",),
    "score": ("score",),
}
Flags = dict[str, dict[str, Any]]  # section -> field -> value (None = not given)


# ------------------------------------------------------------------------------------- resolution
def resolve(base: Preset, command: str, *, config: str | Path | None = None, sets: list[str] | None = None,
            flags: Flags | None = None) -> Preset:
    """``base`` with the config file's, then ``--set``'s, then the flags' values of ``command``'s sections."""
    sections = COMMAND_SECTIONS[command]
    preset = dataclasses.replace(base)
    if config is not None:
        for section, values in read_config(config).items():
            if section in sections:
                preset = _replace(preset, section, values)
    preset = apply_sets(preset, sets, sections)
    for section, values in (flags or {}).items():
        if section not in sections:
            raise ValueError(f"flags of section {section!r} do not belong to `statevad {command}`")
        preset = dataclasses.replace(preset, **{section: override(getattr(preset, section), **values)})
    validate(preset, sections)
    if "score" in sections and preset.score.flow_term.lower() != base.score.flow_term.lower():
        # the model's statistics and selected weights are of the flow term it was trained with
        raise UserError(f"score.flow_term = {preset.score.flow_term!r}: this model was trained with "
                        f"{base.score.flow_term!r} and its statistics are of that term; retrain with "
                        f"--set train.flow_term={preset.score.flow_term.lower()} to score with it")
    return preset


def validate(preset: Preset, sections: tuple[str, ...] = SECTIONS) -> None:
    """The value checks of every resolution (:meth:`statevad.config.Preset.validate`; for the model section
    also the network's own rules): one clear line each."""
    preset.validate(sections)


def _replace(preset: Preset, section: str, values: dict[str, Any]) -> Preset:
    if section == "score" and "track_frames" in values and "track_seconds" not in values:
        # the track mean's window given in frames replaces one in seconds (which would win otherwise): so
        # `--set score.track_frames=0` is the published max on every preset, the generic one included
        values = {**values, "track_seconds": 0.0}
    return dataclasses.replace(preset, **{section: dataclasses.replace(getattr(preset, section), **values)})


def read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """A ``--config`` TOML file as {section: {field: value}}, every field checked against the preset's."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config {path} is not valid TOML ({exc})") from None
    template = Preset(name="")
    out: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise UserError(f"--config {path}: {section!r} is not a settings table; use [section] tables "
                            f"named {', '.join(SECTIONS)}")
        cfg = getattr(template, section)
        out[section] = {name: _checked(cfg, name, value, f"--config {path}: [{section}] {name}")
                        for name, value in table.items()}
    return out


def apply_sets(preset: Preset, pairs: list[str] | None, sections: tuple[str, ...]) -> Preset:
    """Apply ``SECTION.FIELD=VALUE`` overrides (e.g. ``box.score_thr=0.3``) to a copy of ``preset``.

    Every preset field is reachable from the command line this way, not only the few with their own flag;
    values are parsed with the type of the field, so ``box.detector_tiles=2`` is an int.
    """
    out = dataclasses.replace(preset)
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in sections:
            raise UserError(f"--set {pair!r}: expected SECTION.FIELD=VALUE with SECTION in "
                            f"{', '.join(sections)}")
        cfg = getattr(out, section)
        _field_type(cfg, name, f"--set {pair!r}")
        value = _parse_value(getattr(cfg, name), raw.strip(), pair)
        out = _replace(out, section, {name: value})
    return out


def _field_type(cfg: Any, name: str, where: str) -> Any:
    """The type annotation of field ``name`` of dataclass ``cfg``; an unknown field is a UserError."""
    hints = typing.get_type_hints(type(cfg))
    fields = [f.name for f in dataclasses.fields(cfg)]
    if name not in fields:
        section = type(cfg).__name__.removesuffix("Config").lower()
        raise UserError(f"{where}: {section} has no field {name!r}; fields: {', '.join(sorted(fields))}")
    return hints[name]


def _checked(cfg: Any, name: str, value: Any, where: str) -> Any:
    """A config-file value checked against the field's annotation (ints are accepted for floats)."""
    hint = _field_type(cfg, name, where)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if kind is type(None) and value is None:
            return None
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is tuple and isinstance(value, list):
            item = (typing.get_args(kind) or (Any,))[0]
            if item is Any or all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                return tuple(value)
    raise UserError(f"{where} = {value!r}: expected {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _parse_value(current: Any, raw: str, pair: str) -> Any:
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise UserError(f"--set {pair!r}: {raw!r} is not a valid {type(current).__name__}") from None
    if current is None and raw.lower() in ("none", ""):
        return None
    if isinstance(current, tuple):
        items = [v.strip() for v in raw.strip().removeprefix("[").removesuffix("]").split(",") if v.strip()]
        kind = type(current[0]) if current else str
        try:
            return tuple(kind(v) for v in items)
        except ValueError:
            raise UserError(f"--set {pair!r}: {raw!r} is not a comma-separated list of "
                            f"{kind.__name__}") from None
    return raw


# ------------------------------------------------------------------------------ recorded settings
def recorded_stages(manifest: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """The box / flow / cube configs a work manifest recorded (only those present), as dataclasses.

    A manifest written by another statevad version whose fields no longer fit is refused: the cubes of a
    new run would silently differ from the ones the model was trained on.
    """
    options = (manifest or {}).get("options")
    if not isinstance(options, dict):
        return {}
    out: dict[str, Any] = {}
    for key, cls in (("box", BoxConfig), ("flow", FlowConfig), ("cube", CubeConfig)):
        if isinstance(options.get(key), dict):
            try:
                out[key] = cls(**options[key])
                out[key].validate()
            except TypeError as exc:
                raise UserError(f"{where}: the recorded {key} settings do not fit this statevad version "
                                f"({exc}); re-run `statevad prepare` with this version") from None
            except UserError as exc:
                raise UserError(f"{where}: the recorded {key} settings are invalid ({exc}); re-run "
                                "`statevad prepare`") from None
        elif options.get(key) is not None:
            raise UserError(f"{where}: the recorded {key} settings are a {type(options[key]).__name__}, not "
                            "a table; re-run `statevad prepare`")
    return out


def preset_for_work(work: str | Path, name: str | None = None) -> Preset:
    """The base preset to train with: ``name`` if given, else the one prepare recorded in the work manifest
    (or the dataset name it detected, else ``generic``), with the box / flow / cube options prepare used."""
    from statevad.workdir import require_manifest

    if name:
        return get_preset(name)
    manifest = require_manifest(work)
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    recorded = options.get("preset")
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    guess = str(recorded or dataset.get("name") or "").lower()
    preset = get_preset(guess if guess in PRESETS else "generic")
    return dataclasses.replace(preset, **recorded_stages(manifest, f"{work}/manifest.json"))
