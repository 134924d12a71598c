"""Training settings as plain dataclasses, with named presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..crops import DEFAULT_MARGIN, TRAIN_MARGIN_RANGE


@dataclass
class StageConfig:
    epochs: int
    lr: float
    patience: int = 4          # epochs without a better validation macro-F1 before stopping
    warmup_fraction: float = 0.2  # share of the one-cycle schedule spent warming up


@dataclass
class TrainConfig:
    preset: str = "quick"
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    pretrained: bool = False
    input_size: int = 160
    batch_size: int = 32
    freeze_fraction: float = 0.43       # share of the backbone's blocks kept frozen
    stage1: StageConfig = field(default_factory=lambda: StageConfig(8, 2e-3))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(6, 1e-3))
    stage3: StageConfig = field(default_factory=lambda: StageConfig(4, 4e-4))
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    supcon_weight: float = 0.5
    supcon_temperature: float = 0.1
    coarse_level_weight: float = 0.5     # weight of each coarser level's loss (leaf level: 1)
    cam_method: str = "hirescam"
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


def make_config(preset: str = "quick", **overrides: object) -> TrainConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
