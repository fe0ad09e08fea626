"""The service's settings: a ``cameras.toml`` file or repeated ``--camera NAME=SOURCE`` flags.

Every value is checked here, once, so that the rest of the service never sees a bad one: a wrong field is
one line naming the field and the fix (:class:`statevad.errors.UserError`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statevad.calibration import BORDER_MIN_PX, EVENT_MIN_GAP_S, EVENT_MIN_LEN_S
from statevad.errors import UserError

# Camera names appear in URLs, file names and metric labels: a small alphabet keeps all three safe.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
TOKEN_ENV = "STATEVAD_TOKEN"
DATABASE_ENV = "STATEVAD_DATABASE"  # a URL with a password: here or in the file, not on the command line
MIN_TOKEN_LEN = 16


@dataclass
class CameraConfig:
    """One camera: where its frames come from and how they are scored."""

    name: str
    source: str
    model: str
    loop: bool = False  # a video file starts again at its end (a camera stand-in)
    realtime: bool | None = None  # read a file at its frame rate (default: when looped); streams always are
    # The scoring fields are `statevad score`'s (score_options): the same defaults, the same threshold rule
    threshold: float | None = None  # None: from false_alarms_per_hour / the model's calibration, as `score`
    false_alarms_per_hour: float | None = None
    border_min_size: float = BORDER_MIN_PX  # px; `score --border-min-size` (0 = score every object)
    allow_mismatch: bool = False  # score a camera unlike the training footage (else it is refused)
    boxes: str | None = None  # None: what the model was trained with
    perturb: bool = True
    fps: float | None = None  # override the source's frame rate
    config: str | None = None  # a `statevad score` settings file ([score] table)
    queue: int = 8  # frames waiting for the scorer at most (a live source's reader queue)
    batch_frames: int = 4
    max_objects: int = 64
    min_gap_s: float = EVENT_MIN_GAP_S
    min_len_s: float = EVENT_MIN_LEN_S
    clip_s: float = 4.0  # seconds of the event clip, centred on the peak
    n_crops: int = 3  # most anomalous objects kept (boxes + crops) per event

    @property
    def paced(self) -> bool:
        return self.loop if self.realtime is None else self.realtime

    def score_options(self) -> Any:
        """This camera's :class:`statevad.stream.ScoreOptions` (what `statevad score` would be given)."""
        from statevad.stream.driver import ScoreOptions

        return ScoreOptions(threshold=self.threshold, false_alarms_per_hour=self.false_alarms_per_hour,
                            border_min_px=self.border_min_size, allow_mismatch=self.allow_mismatch,
                            boxes=self.boxes, perturb=self.perturb, fps=self.fps,
                            batch_frames=self.batch_frames, max_objects=self.max_objects,
                            min_gap_s=self.min_gap_s, min_len_s=self.min_len_s, video=False, progress=False)


@dataclass
class ServeConfig:
    cameras: list[CameraConfig] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8780
    data: str = "statevad-serve"  # the service's folder: the SQLite file and media/
    database: str | None = None  # a SQLAlchemy URL (postgresql+psycopg://...); None: SQLite in data/
    token: str | None = dataclasses.field(default=None, repr=False)  # never printed
    webhook: str | None = None
    webhook_retries: int = 3
    reconnect_max_s: float = 30.0
    torch_threads: int = 1  # per camera worker: cameras run in parallel, one core each
    release_memory_s: float = 30.0  # malloc's free memory back to the OS this often (0 = never; see worker)

    @property
    def data_dir(self) -> Path:
        return Path(self.data).expanduser()

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    def database_url(self) -> str:
        return self.database or f"sqlite:///{(self.data_dir / 'statevad.db').resolve()}"


_CAMERA_FIELDS = {f.name: f for f in dataclasses.fields(CameraConfig)}
_SERVE_FIELDS = {f.name for f in dataclasses.fields(ServeConfig)} - {"cameras", "token"} | {"token_file"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The API token: the file's first line, else the environment (never a command-line value: ``ps``
    shows those to every user)."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--token-file {path}: cannot read it ({exc.strerror}); give a readable file "
                            "holding the token") from None
        return text.splitlines()[0].strip() if text else ""
    return os.environ.get(TOKEN_ENV) or None


def _camera(raw: dict[str, Any], where: str) -> CameraConfig:
    unknown = sorted(set(raw) - set(_CAMERA_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r}; expected one of {', '.join(_CAMERA_FIELDS)}")
    for key in ("name", "source", "model"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UserError(f"{where}: {key} is required (a string)")
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        kw[key] = _typed(key, value, _CAMERA_FIELDS[key].type, where)
    return CameraConfig(**kw)


def _typed(key: str, value: Any, kind: Any, where: str) -> Any:
    kind = str(kind)
    if value is None:
        return None
    if kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{where}: {key} = {value!r} has the wrong type; expected {kind}")
    return value


def check(cfg: ServeConfig) -> ServeConfig:
    """Refuse a configuration the service cannot run safely; returns ``cfg``."""
    if not cfg.cameras:
        raise UserError("no camera: give --config cameras.toml with [[camera]] tables, or --camera "
                        "NAME=SOURCE with --model MODEL")
    seen: set[str] = set()
    for cam in cfg.cameras:
        where = f"camera {cam.name!r}"
        if not NAME_RE.match(cam.name):
            raise UserError(f"{where}: a camera name is 1-64 letters, digits, '_' or '-' (starting with a "
                            "letter or digit)")
        if cam.name in seen:
            raise UserError(f"{where}: two cameras have this name; give each camera its own name")
        seen.add(cam.name)
        for key, low in (("queue", 1), ("batch_frames", 1), ("max_objects", 0), ("n_crops", 0)):
            if getattr(cam, key) < low:
                raise UserError(f"{where}: {key} must be >= {low}, got {getattr(cam, key)}")
        for key in ("min_gap_s", "min_len_s", "clip_s"):
            if not getattr(cam, key) > 0:
                raise UserError(f"{where}: {key} must be > 0 seconds, got {getattr(cam, key)}")
        if cam.fps is not None and not 0.5 <= cam.fps <= 1000:
            raise UserError(f"{where}: fps must be between 0.5 and 1000 frames/s, got {cam.fps}")
        from statevad.stream.driver import check_options

        try:
            check_options(cam.score_options())
        except UserError as exc:  # the flag names of `statevad score`, said as this file's fields
            msg = re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(exc))
            raise UserError(f"{where}: {msg}") from None
        if not Path(cam.model).expanduser().is_file():
            raise UserError(f"{where}: model {cam.model}: no such file; give a model written by "
                            "`statevad train`")
    if not 0 <= cfg.port <= 65535:
        raise UserError(f"port {cfg.port}: expected 0-65535")
    if cfg.webhook_retries < 0 or cfg.torch_threads < 1 or not cfg.reconnect_max_s > 0:
        raise UserError("webhook_retries >= 0, torch_threads >= 1 and reconnect_max_s > 0 are required")
    if not 0 <= cfg.release_memory_s <= 86400:
        raise UserError(f"release_memory_s must be 0 (never) to 86400 seconds, got {cfg.release_memory_s}")
    if cfg.webhook and not cfg.webhook.lower().startswith(("http://", "https://")):
        raise UserError(f"webhook {cfg.webhook!r}: expected an http:// or https:// URL")
    if cfg.token is not None and len(cfg.token) < MIN_TOKEN_LEN:
        raise UserError(f"the API token is shorter than {MIN_TOKEN_LEN} characters: use a long random one "
                        "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if not is_loopback(cfg.host) and not cfg.token:
        raise UserError(f"--host {cfg.host} is not a loopback address: the service refuses to listen on the "
                        f"network without an API token; set {TOKEN_ENV} or give --token-file FILE (or bind "
                        "127.0.0.1)")
    return cfg


def load(path: str | None, cameras: list[str], model: str | None, overrides: dict[str, Any]) -> ServeConfig:
    """Settings from ``path`` (TOML: a ``[serve]`` table and ``[[camera]]`` tables), then the flags."""
    cfg = ServeConfig()
    token_file: str | None = None
    if path:
        doc = _read_toml(Path(path))
        unknown = sorted(set(doc) - {"serve", "camera"})
        if unknown:
            raise UserError(f"{path}: unknown table [{unknown[0]}]; expected [serve] and [[camera]]")
        serve = doc.get("serve", {})
        if not isinstance(serve, dict):
            raise UserError(f"{path}: [serve] must be a table")
        for key, value in serve.items():
            if key not in _SERVE_FIELDS:
                raise UserError(f"{path}: [serve] has an unknown field {key!r}; expected one of "
                                f"{', '.join(sorted(_SERVE_FIELDS))}")
            if key == "token_file":
                token_file = _typed(key, value, "str", f"{path} [serve]")
                continue
            kind = next(f.type for f in dataclasses.fields(ServeConfig) if f.name == key)
            setattr(cfg, key, _typed(key, value, kind, f"{path} [serve]"))
        tables = doc.get("camera", [])
        if not isinstance(tables, list):
            raise UserError(f"{path}: cameras are [[camera]] tables (an array of tables)")
        base = Path(path).expanduser().resolve().parent
        for i, raw in enumerate(tables):
            cam = _camera(raw, f"{path} [[camera]] #{i + 1}")
            cam.model = _relative(cam.model, base)
            if not _is_stream(cam.source):
                cam.source = _relative(cam.source, base)
            cfg.cameras.append(cam)
        if "data" in serve:
            cfg.data = _relative(cfg.data, base)
    for spec in cameras:
        name, sep, source = spec.partition("=")
        if not sep or not name or not source:
            raise UserError(f"--camera {spec!r}: expected NAME=SOURCE (a camera index, a stream URL or a "
                            "video file)")
        if not model:
            raise UserError(f"--camera {name}: give --model MODEL (the model file its frames are scored "
                            "with)")
        cfg.cameras.append(CameraConfig(name=name, source=source, model=model,
                                        loop=bool(overrides.get("loop", False))))
    for key in ("host", "port", "data", "database", "webhook"):
        if overrides.get(key) is not None:
            setattr(cfg, key, overrides[key])
    if cfg.database is None and os.environ.get(DATABASE_ENV):
        cfg.database = os.environ[DATABASE_ENV]
    token_file = overrides.get("token_file") or token_file
    cfg.token = read_token(token_file)
    return check(cfg)


def _is_stream(source: str) -> bool:
    from statevad.io import is_url

    return is_url(source) or source.strip().isdigit() or source.lower().startswith("file:")


def _relative(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config {path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise UserError(f"--config {path}: cannot read it ({exc.strerror})") from None
