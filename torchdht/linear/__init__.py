"""Linear learners (LSR, LR, softmax) and omniscient teachers (SGD, IMT, DHT, LAST, scaling).

Functional style: learners are stateless objects with ``loss(w, x, y)``,
``grad(w, x, y)`` and ``sgd_step(w, x, y, lr)``; teachers answer
``propose(w) -> (x, y)``; :func:`run` drives the loop. Parameterized teachers
(:class:`TransformTeacher`, :class:`BlackBoxTeacher`) are trained first by
unrolling the learner's SGD (:mod:`torchdht.linear.unroll`). See README.md here.
"""

from .generative import GANTeacher, VAETeacher, halfmoon_gan, mnist_gan, pretrain_vae
from .learners import (
    LR,
    LSR,
    LeastSquares,
    LinearLearner,
    Logistic,
    Softmax,
    fit_w_star,
)
from .parameterized import BlackBoxTeacher, FitHistory, TransformTeacher, policy_mlp
from .privacy import PrivacyTeacher, private_transform_teacher
from .runner import History, run
from .teachers import (
    DHTTeacher,
    IMTTeacher,
    LabelSynthesis,
    ScalingTeacher,
    SGDTeacher,
    Teacher,
    dht_solve,
    imt_scores,
    scaling_beta,
    synthesize_label,
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
