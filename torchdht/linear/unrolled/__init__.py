"""Parameterized teachers of a linear learner, trained by unrolling its SGD (paper section 3.3).

* :mod:`.unroll` -- :func:`unroll`, the pure unrolled objective, and its losses.
* :mod:`.base` -- :class:`UnrolledTeacher`: one outer step, one fit loop, one
  history type (:class:`FitHistory`), checkpoints.
* :mod:`.policies` -- :class:`TransformTeacher` and :class:`BlackBoxTeacher`.
* :mod:`.networks` -- the policies' networks (:func:`policy_mlp`, GAN
  generators and discriminators, conditional VAEs) and their helpers.
* :mod:`.gan` -- :class:`GANTeacher`, :func:`halfmoon_gan`, :func:`mnist_gan`.
* :mod:`.vae` -- :func:`pretrain_vae` (cached on disk), :class:`VAETeacher`,
  :func:`vae_phi`.
* :mod:`.privacy` -- :class:`PrivacyTeacher` (eq. 10), :func:`private_transform_teacher`.

Every teacher here answers ``propose(w)`` and plugs into
:func:`torchdht.linear.run`.
"""

from .base import FitHistory, Penalty, UnrolledTeacher, call_module, check_config, evaluating
from .gan import GANTeacher, halfmoon_gan, mnist_gan
from .networks import (
    MLPVAE,
    ConditionalVAE,
    ConvDiscriminator,
    ConvGenerator,
    ConvVAE,
    MLPDiscriminator,
    MLPGenerator,
    Projection,
    policy_mlp,
)
from .policies import BlackBoxTeacher, TransformTeacher
from .privacy import PrivacyTeacher, private_transform_teacher
from .unroll import (
    UnrollResult,
    distance_loss,
    learner_loss,
    one_hot_labels,
    sgd_steps,
    unroll,
    validation_loss,
)
from .vae import VAEPretraining, VAETeacher, pretrain_vae, vae_phi

__all__ = [
    "BlackBoxTeacher",
    "ConditionalVAE",
    "ConvDiscriminator",
    "ConvGenerator",
    "ConvVAE",
    "FitHistory",
    "GANTeacher",
    "MLPDiscriminator",
    "MLPGenerator",
    "MLPVAE",
    "Penalty",
    "PrivacyTeacher",
    "Projection",
    "TransformTeacher",
    "UnrollResult",
    "UnrolledTeacher",
    "VAEPretraining",
    "VAETeacher",
    "call_module",
    "check_config",
    "distance_loss",
    "evaluating",
    "halfmoon_gan",
    "learner_loss",
    "mnist_gan",
    "one_hot_labels",
    "policy_mlp",
    "pretrain_vae",
    "private_transform_teacher",
    "sgd_steps",
    "unroll",
    "vae_phi",
    "validation_loss",
]
