"""Linear learners and teachers, in two families (see README.md here).

* :mod:`torchdht.linear.omniscient` -- the learners (LSR, LR, softmax) as
  stateless objects with ``loss(w, x, y)``, ``grad(w, x, y)`` and
  ``sgd_step(w, x, y, lr)``; the omniscient teachers (SGD, IMT, greedy DHT,
  label synthesis, scaling), which answer ``propose(w) -> (x, y)``; and
  :func:`run`, the teaching loop.
* :mod:`torchdht.linear.unrolled` -- parameterized teachers trained first by
  unrolling the learner's SGD (:class:`TransformTeacher`,
  :class:`BlackBoxTeacher`, GAN, VAE and privacy-constrained teachers), with
  one fit loop and one history type (:class:`FitHistory`).

Everything listed in ``__all__`` is importable from here.
"""

from .omniscient import (
    LR,
    LSR,
    DHTTeacher,
    History,
    IMTTeacher,
    LabelSynthesis,
    LeastSquares,
    LinearLearner,
    Logistic,
    ScalingTeacher,
    SGDTeacher,
    Softmax,
    Teacher,
    dht_solve,
    fit_w_star,
    imt_scores,
    run,
    scaling_beta,
    synthesize_label,
)
from .unrolled import (
    BlackBoxTeacher,
    FitHistory,
    GANTeacher,
    PrivacyTeacher,
    TransformTeacher,
    VAETeacher,
    halfmoon_gan,
    mnist_gan,
    policy_mlp,
    pretrain_vae,
    private_transform_teacher,
)

__all__ = [
    "BlackBoxTeacher",
    "DHTTeacher",
    "FitHistory",
    "GANTeacher",
    "History",
    "IMTTeacher",
    "LR",
    "LSR",
    "LabelSynthesis",
    "PrivacyTeacher",
    "LeastSquares",
    "LinearLearner",
    "Logistic",
    "SGDTeacher",
    "ScalingTeacher",
    "Softmax",
    "Teacher",
    "TransformTeacher",
    "VAETeacher",
    "dht_solve",
    "fit_w_star",
    "halfmoon_gan",
    "imt_scores",
    "mnist_gan",
    "policy_mlp",
    "pretrain_vae",
    "private_transform_teacher",
    "run",
    "scaling_beta",
    "synthesize_label",
]
