"""The parameterized experiment's settings: the paper's, ``--quick``'s, the options of
one teacher, and :class:`ParameterizedConfig`, which fills and checks them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import _linear as linear
from ._core.checks import check_choice, check_min, check_rate, flag

__all__ = [
    "BASELINES",
    "EPS_QUANTILE",
    "GENERATIVE",
    "HIDDEN",
    "OWNERS",
    "PAPER",
    "QUICK",
    "TEACHER_NAMES",
    "VAE_LATENT",
    "VALIDATION_FRACTION",
    "ParameterizedConfig",
]

TEACHER_NAMES = ("transform", "blackbox", "gan", "vae", "privacy")
"""The parameterized teachers (``--teacher``)."""
BASELINES = ("SGD", "IMT", "DHT")
"""The baseline teachers (``--baselines``); greedy DHT's row is ``DHT-greedy``."""
VALIDATION_FRACTION = 0.2
"""The black-box teacher's validation share: the last 20 % of the training set."""
PAPER = {**linear.PAPER, "outer_iters": 1000, "unroll": 40, "trajectories": 8,
         "vae_epochs": 100}
"""The paper's setting (the defaults)."""
QUICK = {
    "seeds": 2, "iters": 30, "outer_iters": 40, "unroll": 10, "trajectories": 8,
    "restarts": 4, "solver_steps": 20, "vae_epochs": 2,
}
"""``--quick``: a smoke setting that takes seconds."""
HIDDEN = {"halfmoon": (32, 16), "mnist35": (128, 256, 512, 512, 1024)}
"""The paper's policy MLP per data set (appendix C.3, C.4); MNIST with batch norm."""
VAE_LATENT = {"halfmoon": 2, "mnist35": 16}
"""The VAE's code size per data set (``--vae-latent``): 2 for the 2-d half-moon points
(:func:`~torchdht.linear.unrolled.pretrain_vae`'s default), 16 for MNIST images
(:class:`~torchdht.linear.unrolled.ConvVAE`'s default)."""
GENERATIVE = {"adv_weight": 1.0, "d_steps": 1, "kl_weight": 1.0, "penalty": 1.0,
              "privacy_fraction": 0.1, "cache_dir": str(Path("runs") / "vae-cache")}
"""Defaults of the generative and privacy teachers' options (the teachers' own defaults)."""
OWNERS = {
    "adv_weight": ("gan",), "d_steps": ("gan",), "kl_weight": ("vae",),
    "vae_epochs": ("vae", "privacy"), "vae_latent": ("vae", "privacy"),
    "cache_dir": ("vae", "privacy"), "eps": ("privacy",), "privacy_fraction": ("privacy",),
    "penalty": ("privacy",), "box": ("transform", "blackbox", "privacy"),
}
"""The teachers each teacher-specific option applies to (given with another one: an error)."""
EPS_QUANTILE = 0.5
"""Default ``eps``: this quantile (the median) of the private examples' ``phi``-distances to
their nearest public pool example (see :mod:`torchdht.experiments.parameterized`)."""


def applies(key: str, teacher: str) -> bool:
    """Whether option ``key`` applies to ``teacher`` (options of no teacher in particular
    apply to every one).

    Example:
        >>> applies("kl_weight", "vae"), applies("kl_weight", "gan"), applies("lr", "gan")
        (True, False, True)
    """
    return teacher in OWNERS.get(key, (teacher,))


@dataclass
class ParameterizedConfig(linear.LinearConfig):
    """The experiment's settings, the paper's by default: those of
    :class:`~torchdht.experiments._linear.LinearConfig` (``dataset``, ``seeds``,
    ``iters``, ``lr``, ``l2``, greedy DHT's ``restarts``, ``solver_steps`` and
    ``solver_lr``, ``data_root``, ``out`` (default: None,
    ``runs/parameterized-DATASET-TEACHER``), ``threads``, ``plot``, ``progress`` (bars
    while training), ``verbose``) and its own (filled and checked on creation:
    ``ValueError``; filling again changes nothing).

    The options of one teacher (:data:`OWNERS`) stay None with another teacher (given
    there: ``ValueError``) and take :data:`GENERATIVE`'s (or :data:`PAPER`'s,
    :data:`VAE_LATENT`'s) value with theirs.

    Attributes:
        teacher: the parameterized teacher, from :data:`TEACHER_NAMES`
            (default: "transform").
        outer_iters: outer (Adam) iterations of the teacher's training (default: 1000).
        unroll: unrolled SGD steps per outer iteration (default: 40).
        truncate: back-propagate through the last N unrolled steps only (default: None,
            all).
        alpha: weight of the auxiliary loss (default: 0.0).
        trajectories: learners unrolled in parallel (default: 8).
        horizon: steps after which a training learner restarts (default: None, ``iters``).
        teacher_lr: Adam's learning rate, betas (0.9, 0.999) (default: 2e-3).
        grad_clip: clip the policy's gradient norm (default: None, no clipping).
        hidden: the policy's hidden sizes (default: (), :data:`HIDDEN` of the data set).
        batch_norm: batch norm in the policy (default: None, on for MNIST only).
        residual: the policy outputs a correction added to x (default: False).
        box: squash the policy's examples into the training data's per-dimension
            ``[min, max]``, greedy DHT's feasible set (transform, blackbox, privacy)
            (default: False).
        teacher_seed: seed of the teacher's generator, not an evaluation seed
            (default: 10000).
        load: a saved ``teacher.pt`` to load instead of training (default: None).
        adv_weight: gan: the adversarial term's weight (default: 1.0).
        d_steps: gan: discriminator steps per generator step (default: 1).
        kl_weight: vae: the weight of ``KL(pi || N(0, I))`` (default: 1.0).
        vae_epochs: vae, privacy: VAE pretraining epochs (default: 100).
        vae_latent: vae, privacy: the VAE's code size (default: :data:`VAE_LATENT`).
        cache_dir: vae, privacy: where the pretrained VAE is cached, not inside the data
            root (default: "runs/vae-cache").
        eps: privacy: the minimum ``phi``-distance to the privacy set (default: None,
            :data:`EPS_QUANTILE` of the private examples' distances to the pool).
        privacy_fraction: privacy: the private share of the training set (default: 0.1).
        penalty: privacy: the hinge's weight while training (default: 1.0).
        baselines: the baseline teachers, from :data:`BASELINES`, kept in that order
            (default: all).
    """

    teacher: str = "transform"
    outer_iters: int = PAPER["outer_iters"]
    unroll: int = PAPER["unroll"]
    truncate: int | None = None
    alpha: float = 0.0
    trajectories: int = PAPER["trajectories"]
    horizon: int | None = None
    teacher_lr: float = 2e-3
    grad_clip: float | None = None
    hidden: Sequence[int] = ()
    batch_norm: bool | None = None
    residual: bool = False
    box: bool = False
    teacher_seed: int = 10_000
    load: str | None = None
    adv_weight: float | None = None
    d_steps: int | None = None
    kl_weight: float | None = None
    vae_epochs: int | None = None
    vae_latent: int | None = None
    cache_dir: str | None = None
    eps: float | None = None
    privacy_fraction: float | None = None
    penalty: float | None = None
    baselines: Sequence[str] = BASELINES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("teacher", self.teacher, TEACHER_NAMES)
        check_rate(self, ["teacher_lr"], positive=True)
        check_rate(self, ["alpha"], positive=False)
        for key, owners in OWNERS.items():
            value = getattr(self, key)
            if value is not None and value is not False and self.teacher not in owners:
                raise ValueError(f"{flag(key)} applies to --teacher {' or '.join(owners)}, "
                                 f"not {self.teacher}")
        if self.residual and self.teacher in ("gan", "vae"):
            raise ValueError(f"--residual does not apply to --teacher {self.teacher} (its "
                             "policy makes samples or latent codes, not corrections of x)")
        self._fill()
        self._check_ranges()

    def _fill(self) -> None:
        """The settings left open: those of the data set, the teacher and ``iters``."""
        if self.horizon is None:
            self.horizon = self.iters
        self.hidden = list(self.hidden or HIDDEN[self.dataset])
        if self.batch_norm is None:
            self.batch_norm = self.dataset == "mnist35"
        fill = {**GENERATIVE, "vae_epochs": PAPER["vae_epochs"],
                "vae_latent": VAE_LATENT[self.dataset]}
        for key, default in fill.items():
            if getattr(self, key) is None and applies(key, self.teacher):
                setattr(self, key, default)
        unknown = [n for n in self.baselines if n not in BASELINES]
        if unknown:
            raise ValueError(f"--baselines: unknown {unknown}; choose from "
                             f"{', '.join(BASELINES)}")
        self.baselines = [n for n in BASELINES if n in self.baselines]

    def _check_ranges(self) -> None:
        check_rate(self, ("adv_weight", "kl_weight", "penalty"), positive=False)
        check_rate(self, ["eps"], positive=True)
        if self.privacy_fraction is not None and not 0 < self.privacy_fraction < 1:
            raise ValueError(f"--privacy-fraction must be in (0, 1), got "
                             f"{self.privacy_fraction}")
        check_min(self, ("d_steps", "outer_iters"), 0)
        check_min(self, ("unroll", "trajectories", "horizon", "vae_epochs", "vae_latent"), 1)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"--hidden: expected positive sizes, got {list(self.hidden)}")
        if 0 <= self.teacher_seed < self.seeds:
            raise ValueError(
                f"--teacher-seed {self.teacher_seed} is one of the evaluation seeds "
                f"0..{self.seeds - 1}; the teacher must not be trained from the evaluation "
                "initialisations")

    @property
    def folder(self) -> Path:
        """The output folder: ``out``, else ``runs/parameterized-DATASET-TEACHER``."""
        return (Path(self.out) if self.out
                else Path("runs") / f"parameterized-{self.dataset}-{self.teacher}")

    @property
    def row(self) -> str:
        """The learned teacher's row in the tables: ``DHT-TEACHER``."""
        return f"DHT-{self.teacher}"

    def rows(self) -> list[str]:
        """The table's rows: the baselines (greedy DHT as ``DHT-greedy``), then :attr:`row`.

        Example:
            >>> ParameterizedConfig(baselines=["DHT", "SGD"], teacher="gan").rows()
            ['SGD', 'DHT-greedy', 'DHT-gan']
        """
        return [("DHT-greedy" if n == "DHT" else n) for n in self.baselines] + [self.row]
