"""Linear learners and omniscient teachers (paper section 3.2, Theorem 1, section 5.1).

* :mod:`.learners` -- ``LSR``, ``LR``, ``Softmax(C)``: stateless learners with
  per-example losses, gradients, SGD steps and eq. 4 in closed form.
* :mod:`.target` -- :func:`fit_w_star`, the teaching target.
* :mod:`.checks` -- the :class:`Teacher` protocol and the shared argument checks.
* :mod:`.greedy` -- :class:`SGDTeacher`, :class:`IMTTeacher`, :class:`DHTTeacher`.
* :mod:`.labels` -- label synthesis (:class:`LabelSynthesis`).
* :mod:`.scaling` -- Theorem 1's :class:`ScalingTeacher`.
* :mod:`.runner` -- :func:`run`, the teaching loop, and its :class:`History`.
"""

from .checks import (
    BoxLike,
    Pool,
    Teacher,
    check_learner,
    check_pool,
    check_weights,
    make_generator,
)
from .greedy import DHTTeacher, IMTTeacher, SGDTeacher, dht_solve, imt_scores
from .labels import LabelSynthesis, synthesize_label
from .learners import (
    LR,
    LSR,
    LeastSquares,
    LinearLearner,
    Logistic,
    Softmax,
    check_lr,
    check_x,
    stable_softmax,
)
from .runner import History, run
from .scaling import ScalingTeacher, scaling_beta
from .target import fit_w_star

__all__ = [
    "BoxLike",
    "DHTTeacher",
    "History",
    "IMTTeacher",
    "LR",
    "LSR",
    "LabelSynthesis",
    "LeastSquares",
    "LinearLearner",
    "Logistic",
    "Pool",
    "SGDTeacher",
    "ScalingTeacher",
    "Softmax",
    "Teacher",
    "check_learner",
    "check_lr",
    "check_pool",
    "check_weights",
    "check_x",
    "dht_solve",
    "fit_w_star",
    "imt_scores",
    "make_generator",
    "run",
    "scaling_beta",
    "stable_softmax",
    "synthesize_label",
]
