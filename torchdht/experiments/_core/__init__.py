"""The experiments' common core: data, one training loop, run settings, output, and one
command-line convention (``torchdht.experiments._core``; the demo uses it too).

* data (:mod:`.data`): :func:`load_mnist`, :func:`mnist_root`, :func:`decode_images`,
  :func:`cifar_to_float`, over :func:`torchdht.data.resolve_root`;
* training (:mod:`.train`): :func:`train_loop` with step callbacks and evaluation
  points, :class:`RunWatch` (stops a diverged run, samples the teacher's angle),
  :func:`cross_entropy_step`, :func:`eval_points`, :func:`evaluate`,
  :func:`accuracy`, the context managers :func:`seeded` and :func:`torch_threads`,
  :func:`mean_std`, :func:`format_mean_std`, :func:`progress_bar`;
* output (:mod:`.output`): :class:`Writer` (CSV, JSON, text, figures) and
  :func:`format_table`;
* command line (:mod:`.cli`): :func:`add_common_arguments` (the flags of
  :data:`COMMON_FLAGS`), :func:`add_aliases` (older spellings, hidden),
  :class:`HelpFormatter`, :class:`ListAction`, :func:`fill_presets`,
  :func:`preset_help`, :func:`parse_config` and :func:`run_main`;
* config checks (:mod:`.checks`): :func:`check_choice`, :func:`check_min`,
  :func:`check_rate`, each a ``ValueError`` naming the flag.
"""

from .checks import check_choice, check_min, check_rate
from .cli import (
    COMMON_FLAGS,
    DATA_ROOT_DEFAULT,
    HelpFormatter,
    ListAction,
    add_aliases,
    add_common_arguments,
    build_parser,
    fill_presets,
    parse_config,
    preset_help,
    run_main,
)
from .data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    MNIST_MEAN,
    MNIST_STD,
    cifar_to_float,
    decode_images,
    load_mnist,
    mnist_root,
)
from .output import Writer, format_table
from .train import (
    LoopStats,
    RunWatch,
    accuracy,
    cross_entropy_step,
    eval_points,
    evaluate,
    format_mean_std,
    mean_std,
    progress_bar,
    seeded,
    torch_threads,
    train_loop,
)

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "COMMON_FLAGS",
    "DATA_ROOT_DEFAULT",
    "HelpFormatter",
    "ListAction",
    "LoopStats",
    "RunWatch",
    "MNIST_MEAN",
    "MNIST_STD",
    "Writer",
    "accuracy",
    "add_aliases",
    "add_common_arguments",
    "cross_entropy_step",
    "build_parser",
    "check_choice",
    "check_min",
    "check_rate",
    "cifar_to_float",
    "decode_images",
    "eval_points",
    "evaluate",
    "fill_presets",
    "format_mean_std",
    "format_table",
    "load_mnist",
    "mean_std",
    "mnist_root",
    "parse_config",
    "preset_help",
    "progress_bar",
    "run_main",
    "seeded",
    "torch_threads",
    "train_loop",
]
