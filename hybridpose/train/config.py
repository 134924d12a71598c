"""Training settings as plain dataclasses, with named presets, the choices of each option and their checks.

The dataclass defaults and ``PRESETS`` are the one source of defaults; the enums below are the
choices the CLI offers; ``TrainConfig.validate`` checks values before any work starts and names
the option (``--batch-size``) in a one-line ``ConfigError``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path

from ..data.crops import DEFAULT_MARGIN, TRAIN_MARGIN_RANGE
from ..defaults import CAM_METHODS, DEFAULTS
from ..errors import ConfigError
from ..run.folder import RUN_FORMAT

# CAMs of stage 3 (train/cam.py) and of `explain` (pytorch-grad-cam), named once in defaults.py
CamMethod = Enum("CamMethod", {m: m for m in CAM_METHODS}, type=str)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


MIN_BATCH_SIZE = 2    # batch norm needs two photos per batch
MIN_INPUT_SIZE = 32   # the backbone downsamples by 32


@dataclass
class StageConfig:
    epochs: int
    lr: float
    patience: int = 4          # epochs without a better validation macro-F1 before stopping
    warmup_fraction: float = 0.2  # share of the one-cycle schedule spent warming up


@dataclass
class TrainConfig:
    preset: str = DEFAULTS.preset
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    pretrained: bool = False
    input_size: int = 160
    batch_size: int = 32  # training batch (a preset's); prediction batches: DEFAULTS.batch_size
    freeze_fraction: float = 0.43       # share of the backbone's blocks kept frozen
    stage1: StageConfig = field(default_factory=lambda: StageConfig(8, 2e-3))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(6, 1e-3))
    stage3: StageConfig = field(default_factory=lambda: StageConfig(4, 4e-4))
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    supcon_weight: float = 0.5
    supcon_temperature: float = 0.1
    coarse_level_weight: float = 0.5     # weight of each coarser level's loss (leaf level: 1)
    cam_method: str = DEFAULTS.cam_method
    cam_weight: float = 1.0
    train_margin: tuple[float, float] = TRAIN_MARGIN_RANGE
    eval_margin: float = DEFAULT_MARGIN
    rotation_degrees: float = 10.0
    inner_val_fraction: float = 0.15       # training photos held back for early stopping
    seed: int = 0
    device: str = "auto"
    amp: bool = True                      # mixed precision, CUDA only
    num_threads: int = 0                  # 0: torch's default

    def stage(self, n: int) -> StageConfig:
        return (self.stage1, self.stage2, self.stage3)[n - 1]

    def validate(self) -> "TrainConfig":
        """Check every value a user can set; a ConfigError naming the option otherwise. Returns self."""
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset {self.preset!r}: unknown preset; choose one of {', '.join(PRESETS)}.")
        if self.cam_method not in {m.value for m in CamMethod}:
            raise ConfigError(f"--cam-method {self.cam_method!r}: choose one of {', '.join(m.value for m in CamMethod)}.")
        _check_device(self.device)
        if not isinstance(self.batch_size, int) or self.batch_size < MIN_BATCH_SIZE:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least {MIN_BATCH_SIZE} "
                              "(batch norm needs two photos per batch).")
        if not isinstance(self.input_size, int) or self.input_size < MIN_INPUT_SIZE:
            raise ConfigError(f"--input-size {self.input_size}: must be at least {MIN_INPUT_SIZE} pixels.")
        for n in (1, 2, 3):
            if not isinstance(self.stage(n).epochs, int) or self.stage(n).epochs < 1:
                raise ConfigError(f"--epochs: stage {n} has {self.stage(n).epochs} epochs; "
                                  "give each stage at least 1 (e.g. --epochs 8,6,4).")
        if self.cam_weight < 0:
            raise ConfigError(f"--cam-weight {self.cam_weight}: must be 0 or more.")
        if self.seed < 0:
            raise ConfigError(f"--seed {self.seed}: must be 0 or more.")
        if self.weights and self.pretrained:
            raise ConfigError("--weights and --pretrained both given: --weights FILE starts the backbone from that "
                              "state dict, --pretrained downloads timm hub weights; give one of them.")
        if self.weights and not Path(self.weights).is_file():
            raise ConfigError(f"--weights {self.weights}: file not found; give a state dict saved with torch.save.")
        if self.weights:
            from ..nets.backbones import read_weights

            read_weights(Path(self.weights))  # before any work: a damaged file, or one that would run code, is refused
        _check_backbone(self.backbone)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        for s in ("stage1", "stage2", "stage3"):
            if isinstance(d.get(s), dict):
                d[s] = StageConfig(**d[s])
        if "train_margin" in d:
            d["train_margin"] = tuple(d["train_margin"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, TrainConfig] = {
    # CPU, minutes: small input, early blocks frozen, few epochs.
    "quick": TrainConfig(),
    # GPU: full resolution, whole network trained, the long schedule.
    "full": TrainConfig(
        preset="full", input_size=224, batch_size=64, freeze_fraction=0.0,
        stage1=StageConfig(30, 1e-3, patience=8), stage2=StageConfig(20, 5e-4, patience=6),
        stage3=StageConfig(10, 2e-4, patience=4),
    ),
    # Tests: seconds.
    "tiny": TrainConfig(
        preset="tiny", input_size=64, batch_size=8, freeze_fraction=0.43,
        stage1=StageConfig(1, 1e-3), stage2=StageConfig(1, 1e-3), stage3=StageConfig(1, 1e-3),
    ),
}


# The presets' names, as choices for the CLI.
Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)


def make_config(preset: str = DEFAULTS.preset, **overrides: object) -> TrainConfig:
    """A preset with ``overrides`` (None: keep the preset's value), validated."""
    preset = getattr(preset, "value", preset)
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: unknown preset; choose one of {', '.join(PRESETS)}.")
    overrides = {k: getattr(v, "value", v) for k, v in overrides.items() if v is not None}
    return replace(PRESETS[preset], **overrides).validate()


def parse_epochs(text: str) -> tuple[int, int, int]:
    """``--epochs 8,6,4``: the epochs of stages 1, 2 and 3, each at least 1."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(f"--epochs {text!r}: give three numbers, the epochs of stages 1, 2 and 3, "
                          "each at least 1 (e.g. --epochs 8,6,4).")
    return int(parts[0]), int(parts[1]), int(parts[2])


def stage_epochs(preset: str, epochs: str | None) -> dict[str, StageConfig]:
    """Overrides ``stage1..3`` for ``--epochs`` (the preset's learning rates kept); {} without it."""
    if not epochs:
        return {}
    base = make_config(preset)
    return {f"stage{i}": replace(base.stage(i), epochs=n) for i, n in enumerate(parse_epochs(epochs), start=1)}


def _check_device(device: str) -> None:
    choices = ", ".join(d.value for d in Device)
    name = str(device)
    if name not in {d.value for d in Device} and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"--device {name!r}: choose one of {choices}.")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU found; use --device cpu or auto.")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                              "use --device cuda or auto.")


def _check_backbone(name: str) -> None:
    import timm

    from ..nets import backbones

    if not timm.is_model(name) and name not in getattr(backbones, "BACKBONES", {}):
        raise ConfigError(f"--backbone {name!r}: not a timm model name (see timm.list_models()); "
                          "e.g. efficientnet_lite0, the default.")


# --------------------------------------------------------------------------- fit options and config files


@dataclass
class FitOptions:
    """The `fit` options that are not training settings, with their defaults (the CLI shows these)."""
    folds: int = DEFAULTS.folds
    executor: str = "local"
    address: str | None = None
    cpus_per_fold: float = 1.0
    gpus_per_fold: float = 0.0
    retries: int = 2            # times Ray reruns a fold whose worker died
    workers: int = DEFAULTS.pose_workers
    skeleton: str = DEFAULTS.skeleton
    hierarchy: str | None = None
    images: str | None = None
    flip_pairs: str | None = None
    cache: str | None = None
    max_people: int = 1         # >1: the multi-person pose model, the label given to one person per photo
    person: str = DEFAULTS.person  # ... which one: largest or center
    second_look: bool = False   # a training photo where nobody is found gets the pose model's second look


STAGE_KEYS = {f.name for f in fields(StageConfig)}


def read_fit_config(path: str | Path) -> dict:
    """A `fit --config FILE` YAML file: a mapping of fit options (``folds``, ``executor``, ...), training
    settings (``backbone``, ``cam_weight``, ``train_margin: [0.05, 0.35]``, ``stage1: {lr: 0.002}``, ...)
    and ``preset`` / ``epochs: 8,6,4``; dashes or underscores. Checked here: a ConfigError names the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found; give a YAML file of fit options (e.g. the best.yaml "
                          "of `hybridpose tune`).")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: give a mapping of fit options (key: value per line).")
    of_run = raw.get("format") == RUN_FORMAT
    if of_run:
        raw = run_settings(raw)
    allowed = {f.name for f in fields(FitOptions)} | {f.name for f in fields(TrainConfig)} | {"epochs"}
    values = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            raise ConfigError(f"{path}: unknown option {key!r}; allowed: {', '.join(sorted(allowed))}.")
        if name in ("stage1", "stage2", "stage3"):
            if not isinstance(value, dict) or not set(value) <= STAGE_KEYS:
                raise ConfigError(f"{path}: {key} must be a mapping of {', '.join(sorted(STAGE_KEYS))}.")
            for sub, v in value.items():
                _check_value(path, f"{key}.{sub}", sub, v, _STAGE_TYPES[sub])
        elif not (of_run and name == "skeleton" and isinstance(value, dict)):  # a described skeleton, as a run keeps it
            _check_value(path, str(key), name, value, _FILE_TYPES[name])
        values[name] = value
    return values


def run_settings(config: dict) -> dict:
    """A run's config.json as `fit --config` values: its training settings, folds, skeleton and flip pairs,
    so that `fit --config RUN/config.json` refits or resumes that very run (``RunFolder.fit_command``)."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    values = {k: v for k, v in train.items() if k not in ("device", "num_threads")}
    for key in ("folds", "skeleton"):
        if key in config:
            values[key] = config[key]
    pairs = sorted({tuple(sorted(p)) for p in (config.get("flip_pairs") or {}).items()})
    if pairs:
        values["flip_pairs"] = ",".join(f"{a}:{b}" for a, b in pairs)
    return values


# What a `fit --config` value may be, by the annotation of its field (the CLI's types), and in words.
_KINDS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a text value"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a text value"),
    "tuple[float, float]": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_KINDS["float"][0](x) for x in v),
                            "two numbers, e.g. [0.05, 0.35]"),
}
_FRACTION = (lambda v: 0 <= v <= 1, "from 0 to 1")
_AT_LEAST_0 = (lambda v: v >= 0, "0 or more")
_MORE_THAN_0 = (lambda v: v > 0, "more than 0")
# The ranges the CLI's options have (and a few only a file can set); a value outside one names the key.
_RANGES = {
    "folds": (lambda v: v >= 2, "at least 2"), "workers": (lambda v: v >= 1, "at least 1"), "retries": _AT_LEAST_0,
    "cpus_per_fold": _AT_LEAST_0, "gpus_per_fold": _AT_LEAST_0, "seed": _AT_LEAST_0, "num_threads": _AT_LEAST_0,
    "input_size": (lambda v: v >= MIN_INPUT_SIZE, f"at least {MIN_INPUT_SIZE}"),
    "batch_size": (lambda v: v >= MIN_BATCH_SIZE, f"at least {MIN_BATCH_SIZE}"),
    "freeze_fraction": _FRACTION, "label_smoothing": _FRACTION, "inner_val_fraction": _FRACTION,
    "warmup_fraction": _FRACTION, "weight_decay": _AT_LEAST_0, "supcon_weight": _AT_LEAST_0,
    "supcon_temperature": _MORE_THAN_0, "coarse_level_weight": _AT_LEAST_0, "cam_weight": _AT_LEAST_0,
    "eval_margin": _AT_LEAST_0, "rotation_degrees": _AT_LEAST_0, "lr": _MORE_THAN_0,
    "epochs": (lambda v: v >= 1, "at least 1"), "patience": _AT_LEAST_0,
    "train_margin": (lambda v: 0 <= v[0] <= v[1], "two margins, the first 0 or more and not above the second"),
}
_CHOICES = {"preset": lambda: list(PRESETS), "cam_method": lambda: [m.value for m in CamMethod],
            "executor": lambda: ["local", "ray"]}


def _check_value(path: Path, key: str, name: str, value: object, kind: str) -> None:
    """A ConfigError naming the file and key when ``value`` has the wrong type, range or choice."""
    if kind == "epochs":  # the file's `epochs: 8,6,4`, as --epochs reads it
        try:
            parse_epochs(value)
        except ConfigError:
            raise ConfigError(f"{path}: {key} is {value!r}; give the epochs of stages 1, 2 and 3, each at least 1 "
                              "(e.g. epochs: 8,6,4).") from None
        return
    ok, words = _KINDS[kind]
    if not ok(value):
        raise ConfigError(f"{path}: {key} is {value!r}; give {words}.")
    check, limit = _RANGES.get(name, (None, ""))
    if check is not None and not check(value):
        raise ConfigError(f"{path}: {key} is {value!r}; it must be {limit}.")
    if name in _CHOICES and value not in _CHOICES[name]():
        raise ConfigError(f"{path}: {key} is {value!r}; choose one of {', '.join(_CHOICES[name]())}.")


_STAGE_TYPES = {f.name: f.type for f in fields(StageConfig)}
_FILE_TYPES = {**{f.name: f.type for f in fields(FitOptions)}, **{f.name: f.type for f in fields(TrainConfig)},
               "epochs": "epochs"}


def train_overrides(values: dict, preset: str) -> dict:
    """``make_config`` overrides from a config file's values: stage mappings merged onto the preset's
    stages (or ``epochs``), lists made tuples; fit options left out."""
    fit_only = {f.name for f in fields(FitOptions)} | {"preset", "epochs"}
    out = {k: v for k, v in values.items() if k not in fit_only}
    if "train_margin" in out:
        out["train_margin"] = tuple(out["train_margin"])
    base = {**stage_epochs(preset, values.get("epochs")), }
    for i in (1, 2, 3):
        name = f"stage{i}"
        if name in out:
            start = base.get(name) or make_config(preset).stage(i)
            try:
                base[name] = replace(start, **out.pop(name))
            except TypeError as e:
                raise ConfigError(f"{name}: {e}.") from None
    return {**out, **base}


def write_fit_config(path: str | Path, values: dict, header: str = "") -> None:
    """A YAML file that `fit --config` reads back (``header``: comment lines on top)."""
    import yaml

    from .. import atomic

    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic.write_text(path, comment + yaml.safe_dump(values, sort_keys=False))
