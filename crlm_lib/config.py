"""Profiles and paths: the one place for defaults.

A *profile* fixes every size, count and budget of a run, so that notebooks only pass a profile
name (``smoke``, ``cpu`` or ``paper``) and the library derives the rest:

========  =========================================  ===========  ==========  =======
profile   what for                                   cohort       volume      epochs
========  =========================================  ===========  ==========  =======
smoke     tests, nbval, a few-minute tour            30 synth.    16x32x32    2
cpu       ``make paper`` on a 2-core laptop-class    197 synth.   16x32x32    8
paper     GPU, the papers' settings                  197          40x128x128  100
========  =========================================  ===========  ==========  =======

The papers' preprocessing (4D-ACFNet section 4.1) resizes in-plane to 128x128 and crops 40
slices; at that size one 4D-ACFNet step costs seconds on a CPU (see docs/design.md, "Compute facts"),
so the CPU profile uses a reduced grid and says so in the manuscript. Its budget (``make paper``
under 30 minutes on 2 cores) also sets: the elastic deformation applied to 20% of training
samples (TorchIO's B-spline resampling dominates a step at this size), and the cross-validation
of image models restricted to 4D-ACFNet (with the Cox anchor, and the published network without
it; the censoring-aware objective is compared on the papers' split), the plain 3D CNN and AMINN,
two repeats of up to 8 epochs; the 3D ResNets and STG are compared on the papers' split only.
The models without a CT volume (clinical MLP, AMINN) cost under a second per epoch and keep
the ``paper`` profile's 100 epochs (``TrainConfig.epochs_no_volume``). The ``paper`` profile
runs every model in the cross-validation.

Why 8 epochs: on the synthetic cohort's cpu grid, the Cox-anchored 4D-ACFNet's validation C
stops improving within a few epochs (most folds keep the anchored start, ``best_epoch`` 0), so
early stopping ends its runs well before 8. Two repeats give the image models' corrected
repeated-CV t interval (``evaluation.intervals``) 9 degrees of freedom instead of 4 (a third
repeat, 14, cost about 4 minutes of the 30-minute budget; ``paper`` runs five).

Everything here is a frozen dataclass: no global mutable state, no environment variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from crlm_lib.model_registry import CV_MODELS

#: Number of yearly bins predicted by every model (postoperative years 1..12).
N_YEARS: int = 12

#: Order of the label masks in every ``masks`` array ``[K, Z, Y, X]`` of the project.
MASK_NAMES: tuple[str, ...] = ("liver", "remnant", "hepatic", "portal", "tumour")

#: Fewest training patients still followed at the end of a year for ``crlm predict`` to treat
#: that year of a predicted curve as backed by the training cohort's follow-up (later years
#: are flagged as the model's extrapolation).
MIN_AT_RISK: int = 10

#: Patient-ID prefix of the TCIA collection (``CRLM-CT-1001`` ...).
TCIA_COLLECTION: str = "Colorectal-Liver-Metastases"


@dataclass(frozen=True)
class SynthConfig:
    """Size of the synthetic cohort written in the TCIA layout.

    Attributes
    ----------
    n_patients : int
        Patients written (197 as in the collection).
    matrix : int
        In-plane matrix of the synthetic CT (pixels); the real collection is 512.
    pixel_spacing_mm : float
        In-plane pixel spacing (mm). ``matrix * pixel_spacing_mm`` is the field of view.
    slices : tuple[int, int]
        Inclusive range of slice counts per series (varied so that cropping and padding are
        both exercised).
    slice_thickness_mm : float
        Slice spacing (mm).
    heldout_patients : int
        Patients per held-out seed of the generator's calibration check
        (``data.synthetic.heldout_calibration``, notebook 01).
    setting : str
        Outcome model of the generator (``crlm_lib.data.synthetic.SETTINGS``):
        ``"image_effect"`` (default; quantities only the CT and SEG show carry a stated share of
        the hazard) or ``"null"`` (the outcome depends on the clinical table alone).
    """

    n_patients: int = 197
    matrix: int = 96
    pixel_spacing_mm: float = 4.0
    slices: tuple[int, int] = (30, 60)
    slice_thickness_mm: float = 5.0
    heldout_patients: int = 4000
    setting: str = "image_effect"


@dataclass(frozen=True)
class PreprocessConfig:
    """The papers' preprocessing (4D-ACFNet section 4.1, repeated by STAR).

    Attributes
    ----------
    depth : int
        Slices kept, centred on the portal-vein bifurcation (paper: 40).
    size : int
        In-plane size after third-order spline resizing (paper: 128).
    hu_window : tuple[float, float]
        HU range mapped linearly to [-1, 1] (values outside are clipped) before CLAHE: the
        abdominal soft-tissue window (level 40, width 400 HU), so that the equalisation
        serves the tumour-liver contrast the papers name; ``(-1024, 1024)`` is the full-range
        reading (see ``data.preprocess``).
    pad_hu : float
        HU used to pad volumes with fewer than ``depth`` slices (paper: -1024).
    clahe_clip_limit : float
        Clip limit of the adaptive histogram equalisation (skimage ``equalize_adapthist``).
    closing_radius : int
        Radius (voxels) of the ball used to close each mask morphologically.
    """

    depth: int = 40
    size: int = 128
    hu_window: tuple[float, float] = (-160.0, 240.0)
    pad_hu: float = -1024.0
    clahe_clip_limit: float = 0.01
    closing_radius: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """Widths shared by the registry's models (see ``crlm_lib.models.build_model``)."""

    width: int = 16
    embed_dim: int = 32
    time_embed_dim: int = 8
    n_years: int = N_YEARS


@dataclass(frozen=True)
class TrainConfig:
    """The training engine's settings (4D-ACFNet section 4.2: AdamW 1e-4, plateau 0.5/5, B=1).

    The device-side fields (``crlm_lib.train.fit``): ``num_workers`` DataLoader worker
    processes; ``amp`` autocast precision, ``"auto"`` (bf16 on a CUDA GPU that supports it,
    else fp16 with a gradient scaler; off on CPU), ``"bf16"``, ``"fp16"`` or ``"off"``;
    ``deterministic`` deterministic algorithms and ``cudnn.benchmark`` off (bit-for-bit CPU
    runs, repeatable GPU runs) -- ``False`` lets cuDNN pick the fastest kernels; ``pin_memory``
    page-locked host batches for asynchronous copies (CUDA only). Under ``torchrun`` the batch
    size is per process (global batch = ``batch_size x world size``).
    """

    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    early_stopping_patience: int = 15
    num_workers: int = 0
    augment: bool = True
    elastic_probability: float = 1.0
    max_train_batches: int | None = None
    amp: str = "auto"
    deterministic: bool = True
    pin_memory: bool = True
    #: What early stopping and ``best.pt`` follow (``train.BestCheckpoint``): ``"val_loss"``
    #: (lower is better) or ``"val_c_os"``, the validation Harrell C of the predicted 5-year
    #: death risk (higher is better): training stops when the validation C stops improving.
    monitor: str = "val_loss"
    #: Score a model that starts at a fitted anchor (``model.anchored_start``: the Cox-anchored
    #: 4D-ACFNet, STAR and 3D CNN) on the validation set before the first step and keep it as
    #: the first candidate of ``best.pt`` (epoch 0): a network whose training never beats its
    #: start on the monitored value ends as its start. A randomly initialised model's start is
    #: no candidate (its validation C is chance).
    score_start: bool = False
    #: What a randomly initialised model follows instead of ``monitor`` (``None``: the same).
    #: The validation C of a few dozen patients is noisy, and a random start's early epochs
    #: rank patients by chance: its maximum over epochs falls on an untrained epoch. The
    #: validation loss scores every validation patient's likelihood and falls while the model
    #: learns. (On the cpu profile's synthetic CV, AMINN followed by its validation C kept
    #: epoch 1-6 in every fold and ranked DFS inversely, C 0.37; by its validation loss it
    #: trained 40-60 epochs and reached C 0.68.)
    random_start_monitor: str | None = None
    #: Epochs and early-stopping patience of the models that read no CT volume (the clinical
    #: MLP and AMINN: vectors and lesion sets, under a second per epoch on a CPU); ``None``:
    #: ``epochs`` / ``early_stopping_patience`` (and the CV's ``cv_epochs_3d``). A profile that
    #: shortens training to afford the 3D networks need not starve the models that cost nothing.
    epochs_no_volume: int | None = None
    patience_no_volume: int | None = None

    def for_model(self, *, anchored: bool, reads_volume: bool) -> TrainConfig:
        """The settings one model trains with: ``random_start_monitor`` for a model that does
        not start at a fitted anchor, ``epochs_no_volume``/``patience_no_volume`` for one that
        reads no CT volume; otherwise this config unchanged."""
        changes: dict = {}
        if not anchored and self.random_start_monitor is not None:
            changes["monitor"] = self.random_start_monitor
        if not reads_volume and self.epochs_no_volume is not None:
            changes["epochs"] = self.epochs_no_volume
        if not reads_volume and self.patience_no_volume is not None:
            changes["early_stopping_patience"] = self.patience_no_volume
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocols: the papers' 8:1:1 split and repeated stratified k-fold CV."""

    cv_folds: int = 5
    cv_repeats: int = 5
    cv_repeats_3d: int = 1
    cv_epochs_3d: int = 10
    bootstrap: int = 1000
    horizons_years: tuple[float, ...] = (1.0, 3.0, 5.0)
    #: Models of the cross-validation (default: every registry model with its objectives,
    #: ``model_registry.CV_MODELS``).
    cv_models: tuple[str, ...] = CV_MODELS
    shap_samples: int = 200


@dataclass(frozen=True)
class Profile:
    """A named bundle of every setting of a run."""

    name: str
    synth: SynthConfig = field(default_factory=SynthConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    n_jobs: int = 2
    #: Where the protocols run their torch fits when no executor is named
    #: (``crlm_lib.executors``: ``"local"``, ``"dask"``, ``"slurm:partition=gpu"`` ...). A
    #: fit's numbers depend on its torch thread count (not on the executor or the worker), so
    #: an executor that names ``threads`` reproduces its numbers on any machine. Every profile
    #: keeps ``"local"``: on the 2-core CPU, two cpu-profile fits at once on one thread each
    #: took 1.6-2.1x longer per epoch than one fit on two threads, no net gain.
    executor: str = "local"

    def with_(self, **changes) -> Profile:
        """Return a copy with top-level fields replaced (``profile.with_(seed=1)``)."""
        return replace(self, **changes)


SMOKE = Profile(
    name="smoke",
    synth=SynthConfig(
        n_patients=30, matrix=48, pixel_spacing_mm=8.0, slices=(12, 24), heldout_patients=300
    ),
    preprocess=PreprocessConfig(depth=16, size=32),
    model=ModelConfig(width=8, embed_dim=16, time_embed_dim=4),
    train=TrainConfig(
        epochs=2, batch_size=4, lr=1e-3, early_stopping_patience=5, elastic_probability=0.5
    ),
    eval=EvalConfig(
        cv_folds=2,
        cv_repeats=1,
        cv_repeats_3d=1,
        cv_epochs_3d=1,
        bootstrap=50,
        cv_models=("acfnet", "acfnet:censored", "clinical_mlp"),
        shap_samples=20,
    ),
)

CPU = Profile(
    name="cpu",
    synth=SynthConfig(
        n_patients=197, matrix=96, pixel_spacing_mm=4.0, slices=(30, 60), heldout_patients=2000
    ),
    preprocess=PreprocessConfig(depth=16, size=32),
    model=ModelConfig(width=8, embed_dim=32, time_embed_dim=4),
    train=TrainConfig(
        epochs=8,
        batch_size=8,
        lr=1e-3,
        early_stopping_patience=4,
        elastic_probability=0.2,
        monitor="val_c_os",
        score_start=True,
        random_start_monitor="val_loss",
        epochs_no_volume=100,
        patience_no_volume=15,
    ),
    eval=EvalConfig(
        cv_folds=5,
        cv_repeats=5,
        cv_repeats_3d=2,
        cv_epochs_3d=8,
        bootstrap=500,
        cv_models=(
            "acfnet",
            "acfnet_noanchor",
            "cnn3d",
            "aminn",
            "clinical_mlp",
        ),
        shap_samples=100,
    ),
)

PAPER = Profile(
    name="paper",
    synth=SynthConfig(n_patients=197, matrix=256, pixel_spacing_mm=1.5, slices=(60, 120)),
    preprocess=PreprocessConfig(depth=40, size=128),
    model=ModelConfig(width=16, embed_dim=32, time_embed_dim=8),
    train=TrainConfig(
        epochs=100,
        batch_size=1,
        lr=1e-4,
        num_workers=8,
        monitor="val_c_os",
        score_start=True,
        random_start_monitor="val_loss",
    ),
    eval=EvalConfig(cv_folds=5, cv_repeats=5, cv_repeats_3d=5, cv_epochs_3d=100, bootstrap=1000),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, CPU, PAPER)}


_Options = TypeVar("_Options")


def with_options(
    cls: type[_Options], options: _Options | None, changes: Mapping[str, Any]
) -> _Options:
    """The options of a call that takes ``options: cls | None = None, **changes``.

    Functions with many settings group them in a frozen dataclass (``ProtocolOptions``,
    ``PreprocessOptions`` ...) and still accept its fields as keywords, so that
    ``run_cv_protocol(models, study, seed=1)`` and
    ``run_cv_protocol(models, study, CVOptions(seed=1))`` are the same call. The keywords
    override the fields of ``options`` (default ``cls()``) through ``dataclasses.replace``.

    Parameters
    ----------
    cls : dataclass type
        The options type of the function.
    options : cls, optional
        Options given as one value (default: ``cls()``, every field at its default).
    changes : mapping
        Fields given as keywords; each must be a field of ``cls``.

    Raises
    ------
    TypeError
        For ``options`` that is not exactly a ``cls`` (a subclass's own fields would be
        ignored without a word), or a keyword that is no field of ``cls`` (the
        message names it and lists the valid ones).

    Examples
    --------
    >>> with_options(SynthConfig, None, {"n_patients": 5}).n_patients
    5
    """
    if options is None:
        options = cls()
    elif type(options) is not cls:  # exact: a subclass's own fields would go unread
        raise TypeError(f"options must be a {cls.__name__}, not {type(options).__name__}")
    valid = [f.name for f in fields(cls)]
    unknown = [name for name in changes if name not in valid]
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}: not a field of {cls.__name__} "
            f"(valid: {', '.join(valid)})"
        )
    return replace(options, **changes) if changes else options


def get_profile(name: str | Profile) -> Profile:
    """Return the profile called ``name`` (``smoke``, ``cpu`` or ``paper``).

    Raises
    ------
    KeyError
        With the list of known profiles, for an unknown name.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is the root of a checkout of this repository (``pyproject.toml`` and
    ``crlm_lib/``)."""
    return (folder / "pyproject.toml").is_file() and (folder / "crlm_lib").is_dir()


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) that holds ``pyproject.toml``.

    Notebooks run with their own folder as working directory (papermill, nbval), so every path
    of the project is resolved from here rather than from the cwd.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if is_checkout(folder):
            return folder
    raise FileNotFoundError(f"no crlm repository (pyproject.toml + crlm_lib/) at or above {here}")


def default_workdir(start: Path | None = None) -> Path:
    """The folder ``crlm`` works in when ``--workdir`` is not given: the repository root when
    ``start`` (default: the current directory) is inside a checkout (:func:`find_repo_root`),
    else ``start`` itself. ``data/``, ``runs/`` and ``results/`` are made under it."""
    try:
        return find_repo_root(start)
    except FileNotFoundError:
        return (start or Path.cwd()).resolve()


def run_tag(profile_name: str, real: bool) -> str:
    """Name of a run's output folders: the profile name for the synthetic cohort,
    ``<profile>-real`` for a real download, so synthetic and real results never mix
    (``data/processed/<tag>``, ``runs/<tag>``, ``results/<tag>``, ``notebooks/executed/<tag>``).
    Takes the name only: a tag needs nothing else of the profile.
    """
    return f"{profile_name}-real" if real else str(profile_name)


@dataclass(frozen=True)
class Paths:
    """Every folder a run reads or writes, derived from the repo root, profile and data choice.

    Attributes
    ----------
    cohort_dir : Path
        Raw cohort root: the TCIA download, or the synthetic cohort in the same layout.
    clinical_csv : Path
        The clinical table (CSV or XLSX, real column names).
    oracle_csv : Path | None
        The synthetic generator's true curves; ``None`` for real data.
    processed_dir : Path
        Preprocessing cache for this profile (``data/processed/<profile>``).
    runs_dir : Path
        Checkpoints and training logs (``runs/<profile>``).
    results_dir : Path
        Tables and figures written by the notebooks (``results/<profile>``).
    synthetic : bool
        Whether the cohort is the synthetic one (labels every result).
    """

    root: Path
    profile: str
    cohort_dir: Path
    clinical_csv: Path
    oracle_csv: Path | None
    processed_dir: Path
    runs_dir: Path
    results_dir: Path
    synthetic: bool


def resolve_paths(
    profile: str | Profile,
    data_dir: str | Path | None = None,
    clinical: str | Path | None = None,
    root: str | Path | None = None,
) -> Paths:
    """Resolve the folders of a run.

    Parameters
    ----------
    profile : str or Profile
        Profile name; selects the synthetic cohort size and the cache folder.
    data_dir : path, optional
        Root of a real TCIA download. ``None`` (default) selects the synthetic cohort at
        ``data/raw/synthetic/<profile>``.
    clinical : path, optional
        Clinical table of a real download. Defaults to ``<data_dir>/clinical.csv``.
    root : path, optional
        Repository root (found from the cwd when omitted).
    """
    prof = get_profile(profile)
    repo = Path(root).resolve() if root else find_repo_root()
    if data_dir in (None, ""):
        cohort = repo / "data" / "raw" / "synthetic" / prof.name
        clin = Path(clinical) if clinical else cohort / "clinical.csv"
        oracle: Path | None = cohort / "oracle.csv"
        synthetic = True
    else:
        cohort = Path(data_dir).expanduser().resolve()
        clin = Path(clinical).expanduser().resolve() if clinical else cohort / "clinical.csv"
        oracle = None
        synthetic = False
    tag = run_tag(prof.name, real=not synthetic)
    return Paths(
        root=repo,
        profile=prof.name,
        cohort_dir=cohort,
        clinical_csv=clin,
        oracle_csv=oracle,
        processed_dir=repo / "data" / "processed" / tag,
        runs_dir=repo / "runs" / tag,
        results_dir=repo / "results" / tag,
        synthetic=synthetic,
    )
