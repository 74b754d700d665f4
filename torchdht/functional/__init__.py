"""Pure tensor functions behind the teachers (no state, torch.func friendly)."""

from . import gram, informed
from .box import (
    Box,
    BoxSolveResult,
    box_from_data,
    check_box,
    in_box,
    project_box,
    projected_adam,
    sample_box,
    solve_box,
)
from .linesearch import LinearHeadOps, dense_head_ops, solve_cap_linesearch
from .lookahead import LinearLookahead, linear_lookahead, lookahead
from .objective import (
    ce_logit_grad,
    greedy_objective,
    linear_ce_objective,
    linear_ce_objective_and_grad,
)
from .performative import TeachStep, greedy_teach, random_teach
from .solve import SolveResult, default_solve_lr, solve_cap
from .sphere import (
    angle,
    angle_to_chord,
    chord,
    chord_to_angle,
    normalize,
    project_cap,
    sample_cap,
)

__all__ = [
    "gram",
    "informed",
    "Box",
    "BoxSolveResult",
    "box_from_data",
    "check_box",
    "in_box",
    "project_box",
    "projected_adam",
    "sample_box",
    "solve_box",
    "LinearHeadOps",
    "LinearLookahead",
    "SolveResult",
    "TeachStep",
    "angle",
    "angle_to_chord",
    "ce_logit_grad",
    "chord",
    "chord_to_angle",
    "default_solve_lr",
    "dense_head_ops",
    "greedy_objective",
    "greedy_teach",
    "linear_ce_objective",
    "linear_ce_objective_and_grad",
    "linear_lookahead",
    "lookahead",
    "normalize",
    "project_cap",
    "random_teach",
    "sample_cap",
    "solve_cap",
    "solve_cap_linesearch",
]
