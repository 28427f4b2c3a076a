"""Static pydantic models of a session config.

These are the *bases*: every ``{type, params}`` slot is typed here as a plain
:class:`ComponentSpec`. :mod:`thelper.config.dynamic` subclasses them at run time with
discriminated unions over the registered components, so that one ``model_validate`` checks
the whole document, third-party params included.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Section",
    "ComponentSpec",
    "TaskSpec",
    "DatasetSpec",
    "TransformSpec",
    "ModelSpec",
    "InitFromConfig",
    "UnfreezeStep",
    "LossSpec",
    "OptimizerSpec",
    "ParamGroupSpec",
    "SchedulerSpec",
    "MetricSpec",
    "SamplerSpec",
    "SeedsConfig",
    "LoadersConfig",
    "OptimizationConfig",
    "EarlyStoppingConfig",
    "EmaConfig",
    "TrainerConfig",
    "parse_max_time",
    "ImportsConfig",
    "SessionConfig",
    "SPLITS",
    "Count",
    "Finite",
    "MAX_EPOCHS",
    "MAX_BATCH_SIZE",
    "MAX_WORKERS",
    "MAX_SEED",
]

SPLITS = ("train", "valid", "test")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"

#: Upper bounds of the counts below: far above any real run, low enough that a typo
#: (``1e26``, a missing unit) is refused before a job is queued rather than when it starts.
MAX_EPOCHS = 10**6
MAX_BATCH_SIZE = 2**20
MAX_WORKERS = 1024
MAX_STEPS = 10**9
#: numpy's global seeding (``np.random.seed``, used for the loader workers) takes 32 bits.
MAX_SEED = 2**32 - 1


def _whole_number(value: Any) -> Any:
    """Refuse booleans and integral floats where a count is read; anything else goes on to
    pydantic's int validation (which reports fractions and non-numbers)."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "int_type", "Input should be a whole number, not a boolean (YAML reads "
            "true/false/yes/no as booleans); write the number, e.g. 10")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        raise PydanticCustomError(
            "int_type", "Input should be a whole number without a decimal point or "
            "exponent (a float such as 1e+26 or 10.0 is refused); write e.g. 10")
    return value


def _real_number(value: Any) -> Any:
    """Refuse booleans where a real number is read (pydantic would read true as 1.0)."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "float_type", "Input should be a number, not a boolean (YAML reads "
            "true/false/yes/no as booleans); write the number, e.g. 0.5")
    return value


#: A count: an ``int`` that refuses booleans and floats (``true`` or ``1e26``), bounded by
#: each field.
Count = Annotated[int, BeforeValidator(_whole_number)]
#: A finite real number that refuses booleans (``.inf``, ``.nan`` and ``true`` are errors).
Finite = Annotated[float, BeforeValidator(_real_number), AllowInfNan(False)]
#: A seed: what numpy's global seeding accepts. (The bounds come before the validator, so
#: that the JSON schema keeps them as ``minimum``/``maximum``.)
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_whole_number)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE), BeforeValidator(_whole_number)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS), BeforeValidator(_whole_number)]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    # defer_build: validation goes through the run-time subclasses of thelper.config.dynamic,
    # so building the core schema of every static base at import would be wasted start-up
    # time (~50 ms); a model used directly builds it on first use.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, defer_build=True)


class ComponentSpec(Section):
    """A pluggable slot: the registered ``type`` and its ``params``."""

    type: str
    """Registered component name (or alias); see ``thelper plugins list``."""
    params: Any = Field(default_factory=dict)
    """Keyword arguments of the component, validated against its params model."""

    @model_validator(mode="before")
    @classmethod
    def _null_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and "params" in data and data["params"] is None:
            data = dict(data)
            data["params"] = {}
        return data


class TaskSpec(ComponentSpec):
    """A task: what the model must predict (e.g. ``classification`` with class names)."""


class DatasetSpec(ComponentSpec):
    """A dataset; ``task`` is required when the dataset type does not provide one."""

    task: TaskSpec | None = None
    """Task of this dataset's samples (keys, class names)."""


class TransformSpec(ComponentSpec):
    """A transform applied to the samples' input (``operation`` is the 0.6 spelling of ``type``)."""

    @model_validator(mode="before")
    @classmethod
    def _operation_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "operation" in data and "type" not in data:
            data = dict(data)
            data["type"] = data.pop("operation")
        return data


#: A parameter-name pattern (see :func:`thelper.finetune.matches`): a glob when it holds
#: ``*``, ``?`` or ``[`` (``features.*``, ``*.bias``), else a module or parameter name that
#: matches itself and everything under it (``features`` matches ``features.0.weight``).
NamePattern = Annotated[str, Field(min_length=1, max_length=500)]
LearningRate = Annotated[float, Field(gt=0.0), BeforeValidator(_real_number),
                         AllowInfNan(False)]
Decay = Annotated[float, Field(ge=0.0), BeforeValidator(_real_number), AllowInfNan(False)]


class InitFromConfig(Section):
    """Initialise the model from saved weights before training (a new session with a new
    optimizer, unlike ``thelper resume``).

    Always read with ``torch.load(weights_only=True)``: a file that pickles objects is
    refused. See ``docs/config/finetuning.md``.
    """

    path: str = Field(min_length=1)
    """A thelper session directory (its ``ckpt.best.pt``, else ``ckpt.latest.pt``), a
    thelper checkpoint file, or a plain state dict file (``torch.save(model.state_dict(),
    path)``, e.g. torchvision's ``.pth`` weights)."""
    key_map: dict[str, str] = Field(default_factory=dict)
    """Checkpoint key prefix → model key prefix, e.g. ``{"fc.": "head.", "": "backbone."}``.
    Each key is renamed by the longest prefix that starts it (``""`` matches every key, so
    it is the fallback); keys that no prefix starts keep their name."""
    exclude: list[NamePattern] = Field(default_factory=list)
    """Keys not loaded (patterns matched against the checkpoint's key and the renamed one),
    e.g. ``[classifier.4]`` for a new head with another number of classes: those model
    parameters keep their fresh initialisation."""
    strict: bool = True
    """Fail when a model parameter (not excluded) is not in the checkpoint, or a checkpoint
    tensor (not excluded) fits no model parameter; ``false`` loads what matches and reports
    the rest. Tensors whose shapes differ are always an error (exclude them)."""


class UnfreezeStep(Section):
    """Make frozen parameters trainable from an epoch on."""

    match: NamePattern | list[NamePattern]
    """Pattern(s) of the parameters to unfreeze (e.g. ``features.*``); each must match a
    parameter frozen by ``model.freeze``."""
    at_epoch: Count = Field(ge=1, le=MAX_EPOCHS)
    """First epoch (1-based) that trains them; ``3`` keeps them frozen for epochs 1 and 2."""


class ModelSpec(ComponentSpec):
    """The model to train; its head is sized from the task."""

    init_from: InitFromConfig | None = None
    """Load weights from a session, checkpoint or state dict file before training (not on
    ``thelper resume``, whose checkpoint holds the weights)."""
    freeze: list[NamePattern] = Field(default_factory=list)
    """Parameters not trained (``requires_grad`` false), by name pattern: ``features.*``,
    ``*.bn*.weight``, ``layer1``. Each pattern must match a parameter. Frozen parameters stay
    in the optimizer, so that unfreezing them keeps the optimizer (and its state)."""
    unfreeze: list[UnfreezeStep] = Field(default_factory=list)
    """When frozen parameters become trainable, e.g. ``[{match: features.*, at_epoch: 3}]``."""


class LossSpec(ComponentSpec):
    """The loss function."""


class ParamGroupSpec(Section):
    """An optimizer parameter group: the parameters a pattern matches, with their own
    learning rate and weight decay."""

    match: NamePattern | list[NamePattern]
    """Pattern(s) of parameter names, e.g. ``features.*`` (see ``model.freeze``); a
    parameter goes to the first group that matches it."""
    lr: LearningRate | None = None
    """Learning rate of the group (default: the optimizer's ``lr``); schedulers scale it like
    the others."""
    weight_decay: Decay | None = None
    """Weight decay of the group (default: the optimizer's), e.g. ``0`` for biases and
    norms."""


class OptimizerSpec(ComponentSpec):
    """The optimizer; receives the model's parameters."""

    param_groups: list[ParamGroupSpec] = Field(default_factory=list)
    """Per-group learning rate and weight decay: ``[{match: features.*, lr: 1.0e-4}]``. A
    parameter goes to the first group whose pattern matches it; the others form the default
    group, with the optimizer's params. Every group must match a parameter."""


class SchedulerSpec(ComponentSpec):
    """A learning-rate scheduler, stepped once per epoch (or per optimizer step)."""

    interval: Literal["epoch", "step"] = "epoch"
    """Step the scheduler after each ``epoch`` or after each optimizer ``step`` (warm-up and
    one-cycle schedules are per step)."""
    step_metric: str | None = None
    """Metric (validation split when there is one) passed to ``step()``, for
    ``reduce_lr_on_plateau``; e.g. ``loss`` or ``accuracy``."""

    @model_validator(mode="before")
    @classmethod
    def _step_metric_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "step metric" in data and "step_metric" not in data:
            data = dict(data)
            data["step_metric"] = data.pop("step metric")
        return data


class SamplerSpec(ComponentSpec):
    """A sampler drawing the samples of a split each epoch (e.g. class rebalancing)."""


class MetricSpec(ComponentSpec):
    """A metric evaluated on each split at the end of every epoch."""


class SeedsConfig(Section):
    """Random seeds; unset seeds are drawn at start-up and recorded in ``run.json``.

    Each seed is an integer in ``[0, 2**32 - 1]`` (numpy's global seeding takes 32 bits).
    """

    split: Seed | None = None
    """Seed of the train/valid/test split of every dataset."""
    torch: Seed | None = None
    """Seed of torch's RNG (initialisation, dropout, augmentations)."""
    numpy: Seed | None = None
    """Seed of numpy's global RNG."""
    random: Seed | None = None
    """Seed of Python's ``random`` module."""
    worker: Seed | None = None
    """Seed of the data-loading order and of the loader workers."""


Ratio = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_real_number),
                  AllowInfNan(False)]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]


class LoadersConfig(Section):
    """How datasets are split and batched."""

    batch_size: BatchSize = 32
    """Samples per batch for every split, unless overridden per split (1 to 2**20)."""
    train_batch_size: BatchSize | None = None
    """Batch size of the training split."""
    valid_batch_size: BatchSize | None = None
    """Batch size of the validation split."""
    test_batch_size: BatchSize | None = None
    """Batch size of the test split."""
    workers: Count = Field(default=0, ge=0, le=MAX_WORKERS)
    """Loader worker processes (0 loads in the main process; at most 1024)."""
    shuffle: bool = True
    """Shuffle the training split every epoch (valid/test are never shuffled)."""
    pin_memory: bool = False
    """Pin host memory for faster host-to-GPU copies."""
    drop_last: bool = False
    """Drop the last incomplete training batch."""
    train_split: dict[str, Ratio] = Field(default_factory=dict)
    """Fraction of each dataset (by name) used for training, e.g. ``{digits: 0.8}``."""
    valid_split: dict[str, Ratio] = Field(default_factory=dict)
    """Fraction of each dataset used for validation."""
    test_split: dict[str, Ratio] = Field(default_factory=dict)
    """Fraction of each dataset used for the final test."""
    train_sampler: SamplerSpec | None = None
    """Sampler of the training split, e.g. ``{type: class_balanced, params: {power: 1}}``."""
    valid_sampler: SamplerSpec | None = None
    """Sampler of the validation split (rarely wanted: it changes the metrics' meaning)."""
    test_sampler: SamplerSpec | None = None
    """Sampler of the test split."""
    skip_bad_samples: bool = False
    """Skip (and count) samples whose file is missing or undecodable instead of stopping
    with a ``DataError`` naming the file."""
    base_transforms: list[TransformSpec] = Field(default_factory=list)
    """Transforms applied to every split's inputs, in order."""
    train_augments: list[TransformSpec] = Field(default_factory=list)
    """Augmentations applied to training inputs only, before ``base_transforms``."""

    @model_validator(mode="before")
    @classmethod
    def _spaced_keys(cls, data: Any) -> Any:
        # thelper 0.6 docs sometimes wrote keys with spaces ("batch size", "train split")
        if isinstance(data, dict):
            data = {(k.replace(" ", "_") if isinstance(k, str) and k.replace(" ", "_") in
                     cls.model_fields and k.replace(" ", "_") not in data else k): v
                    for k, v in data.items()}
        return data

    def batch_size_for(self, split: str) -> int:
        """Batch size of ``split`` (``train``, ``valid`` or ``test``)."""
        per = getattr(self, f"{split}_batch_size")
        return per if per is not None else self.batch_size

    def split_ratios(self, split: str) -> dict[str, float]:
        """``{dataset: fraction}`` for ``split``."""
        return dict(getattr(self, f"{split}_split"))


class OptimizationConfig(Section):
    """Loss, optimizer and scheduler."""

    loss: LossSpec | None = None
    """Loss function; defaults to the task's (cross-entropy for classification)."""
    optimizer: OptimizerSpec
    """Optimizer, e.g. ``{type: adam, params: {lr: 0.001}}``."""
    scheduler: SchedulerSpec | None = None
    """Optional learning-rate scheduler, stepped after each epoch."""


class EarlyStoppingConfig(Section):
    """Stop when the monitored metric has not improved for ``patience`` epochs."""

    patience: Count = Field(ge=1, le=MAX_EPOCHS)
    """Epochs without improvement before stopping."""
    min_delta: Finite = Field(default=0.0, ge=0.0)
    """Smallest change that counts as an improvement (also for choosing ``ckpt.best.pt``)."""
    mode: Literal["min", "max"] | None = None
    """Whether the monitored metric improves by going down (``min``) or up (``max``);
    default: the metric's goal (``min`` for ``loss``). A mode that contradicts the goal is
    an error."""


#: ``DD:HH:MM:SS`` (Lightning's ``max_time`` string): days, then hours below 24 and minutes
#: and seconds below 60.
MAX_TIME_PATTERN = r"^\d{1,4}:([01]\d|2[0-3]):[0-5]\d:[0-5]\d$"
#: The longest ``trainer.max_time``: 10,000 days.
MAX_TIME_SECONDS = 10_000 * 86_400


def parse_max_time(value: str | float | int) -> float:
    """Seconds of a ``trainer.max_time``: ``"DD:HH:MM:SS"`` or a number of seconds.

    Raises:
        ValueError: Not of that form, not above 0, or above 10,000 days.
    """
    if isinstance(value, str):
        text = value.strip()
        if not re.match(MAX_TIME_PATTERN, text):
            raise ValueError(f"{value!r} is not a duration: write 'DD:HH:MM:SS' (e.g. "
                             "'00:12:00:00' for 12 hours; hours below 24, minutes and "
                             "seconds below 60) or a number of seconds (e.g. 43200)")
        days, hours, minutes, seconds = (int(p) for p in text.split(":"))
        total = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        total = float(value)
        if not math.isfinite(total):
            raise ValueError(f"{value!r} is not a finite number of seconds")
    else:
        raise ValueError(f"{value!r} is not a duration: write 'DD:HH:MM:SS' or a number of "
                         "seconds")
    if total <= 0:
        raise ValueError(f"{value!r} is not above 0 seconds; leave max_time out (null) for "
                         "no time limit")
    if total > MAX_TIME_SECONDS:
        raise ValueError(f"{value!r} is above 10,000 days; leave max_time out (null) for no "
                         "time limit")
    return total


def _max_time(value: Any) -> Any:
    """Check a ``max_time`` (booleans included: YAML reads ``yes`` as true); keep it as
    written."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise PydanticCustomError(
            "max_time", "Input should be 'DD:HH:MM:SS' or a number of seconds, not a "
            "boolean")
    try:
        parse_max_time(value)
    except ValueError as exc:
        raise PydanticCustomError("max_time", str(exc)) from None
    return value


#: A duration: ``"DD:HH:MM:SS"`` or seconds (the bounds before the validator, so that the
#: JSON schema keeps them).
MaxTime = Annotated[
    Annotated[str, Field(pattern=MAX_TIME_PATTERN)]
    | Annotated[float, Field(gt=0.0, le=MAX_TIME_SECONDS), AllowInfNan(False)],
    BeforeValidator(_max_time)]


class EmaConfig(Section):
    """An exponential moving average of the weights, evaluated and checkpointed beside them
    (``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``)."""

    decay: Annotated[float, Field(gt=0.0, lt=1.0), BeforeValidator(_real_number),
                     AllowInfNan(False)] = 0.999
    """Weight of the average at each update: ``ema = decay * ema + (1 - decay) * weights``
    (above 0, below 1; ``0.999`` averages over about the last 1000 updates)."""
    every_n_steps: Steps = 1
    """Update the average every N optimizer steps."""


class TrainerConfig(Section):
    """Training loop settings."""

    type: str = "default"
    """Registered trainer (the generic epoch loop is ``default``)."""
    params: Any = Field(default_factory=dict)
    """Trainer-specific params (e.g. ``grad_clip_norm``)."""
    epochs: Count = Field(ge=1, le=MAX_EPOCHS)
    """Number of training epochs."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, or ``cuda:all`` (one
    DistributedDataParallel rank per GPU; under torchrun every CUDA choice means
    ``cuda:<LOCAL_RANK>``)."""
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    """``32`` (float32), ``bf16-mixed`` (autocast to bfloat16; CPU and GPU) or ``16-mixed``
    (autocast to float16 with a gradient scaler; CUDA only)."""
    accumulate_grad_batches: Count = Field(default=1, ge=1, le=MAX_BATCH_SIZE)
    """Sum the gradients of N batches before each optimizer step: an effective batch N times
    larger (each batch's loss is weighted by its share of the window's samples, so the
    epoch's last, shorter window counts as one batch too)."""
    compile: bool = False
    """Compile the model with ``torch.compile`` for training (needs a C++ compiler on CPU)."""
    save_freq: Count = Field(default=1, ge=1, le=MAX_EPOCHS)
    """Keep ``checkpoints/ckpt.<epoch>.pt`` every N epochs (latest and best are always kept);
    not with ``save_top_k``."""
    save_top_k: Count | None = Field(default=None, ge=1, le=MAX_EPOCHS)
    """Keep the checkpoints of the K best epochs by the monitored metric,
    ``ckpt.epoch<NNNN>-<metric><value>.pt``, instead of ``ckpt.<epoch>.pt`` every
    ``save_freq`` epochs (latest and best are always kept)."""
    monitor: str = "loss"
    """Metric that selects ``ckpt.best.pt`` (on the validation split when there is one)."""
    early_stopping: EarlyStoppingConfig | None = None
    """Stop early when the monitored metric stalls."""
    max_time: MaxTime | None = None
    """Training time limit, ``"DD:HH:MM:SS"`` or seconds, summed over the resumes: the loop
    stops at the next step with a checkpoint, status ``interrupted``, ``stopped_reason:
    time_limit`` and exit code 3 (resume with a larger ``max_time``)."""
    ema: EmaConfig | None = None
    """Exponential moving average of the weights, e.g. ``{decay: 0.999}``: validation and
    test use it (the monitored metric is the average's)."""
    optimization: OptimizationConfig
    """Loss, optimizer and scheduler."""
    metrics: dict[str, MetricSpec] = Field(default_factory=dict)
    """Named metrics evaluated on every split each epoch (``loss`` is always tracked)."""
    test_metrics: dict[str, MetricSpec] = Field(default_factory=dict)
    """Extra metrics evaluated only in the final test."""
    progress: bool = True
    """Show a progress bar per epoch (only on an interactive terminal)."""
    checkpoint_every_n_steps: Steps | None = None
    """Also write ``ckpt.step.<step>.pt`` every N optimizer steps, so that a run killed
    mid-epoch resumes at the next step instead of the epoch start."""
    keep_step_checkpoints: Count = Field(default=2, ge=1, le=MAX_STEPS)
    """How many mid-epoch step checkpoints to keep (oldest are deleted)."""
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    """NaN/inf loss: ``stop`` the run (naming epoch and step, keeping the last good
    checkpoint) or ``skip`` the step."""
    deterministic: bool = False
    """Use deterministic algorithms (``torch.use_deterministic_algorithms``) so that GPU
    runs repeat bit for bit (slower)."""

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_words(cls, value: Any) -> Any:
        # 32 and 16 written as numbers in YAML; Lightning's older spellings
        aliases = {32: "32", "32-true": "32", "bf16": "bf16-mixed", 16: "16-mixed",
                   "16": "16-mixed"}
        return aliases.get(value, value)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") is None and "type" in data:
            data = dict(data)
            data.pop("type")
        return data

    @field_validator("save_top_k")
    @classmethod
    def _top_k_or_freq(cls, value: int | None, info: ValidationInfo) -> int | None:
        freq = info.data.get("save_freq", 1)
        if value is not None and freq != 1:
            raise PydanticCustomError(
                "save_top_k", "save_top_k ({k}) replaces the ckpt.<epoch>.pt files that "
                "save_freq ({freq}) keeps: set only one of them", {"k": value, "freq": freq})
        return value

    def max_time_seconds(self) -> float | None:
        """``max_time`` in seconds (``None``: no limit)."""
        return None if self.max_time is None else parse_max_time(self.max_time)


class ImportsConfig(Section):
    """Import-path escape hatch for classes that no plugin registers."""

    allow: list[ModuleName] = Field(default_factory=list)
    """Extra module prefixes that ``class_path`` params may import (besides torch,
    torchvision and thelper packages), e.g. ``[mypackage.datasets]``."""


class SessionConfig(Section):
    """A whole training session."""

    name: str = Field(pattern=NAME_PATTERN, max_length=200)
    """Session name: the session directory's name (letters, digits, ``_ . + -``)."""
    description: str | None = None
    """Free text kept with the session."""
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    """Named datasets; split into train/valid/test by ``loaders``."""
    loaders: LoadersConfig
    """Splits, batching and transforms."""
    model: ModelSpec
    """The model."""
    trainer: TrainerConfig
    """The training loop."""
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    """Random seeds (drawn and recorded when unset)."""
    imports: ImportsConfig = Field(default_factory=ImportsConfig)
    """Import-path allow-list."""
    version: str | None = None
    """thelper version that wrote this config (informational)."""


GOALS = Literal["max", "min"]
