"""Metric names and which way is better: the one rule every comparison uses.

The capture logs ``training_<metric>`` and ``test_<metric>``; the sweep ranks runs, retrain
compares a challenger with the champion, and the monitor reports live quality, all by the
names and the direction defined here. Macro-averaged F1 is ``f1_macro`` everywhere.
"""

from __future__ import annotations

from typing import Final

ACCURACY: Final = "accuracy"
F1_MACRO: Final = "f1_macro"
ROC_AUC: Final = "roc_auc"
R2: Final = "r2"
RMSE: Final = "rmse"
MAE: Final = "mae"
LOG_LOSS: Final = "log_loss"

HIGHER_IS_BETTER: dict[str, bool] = {
    ACCURACY: True,
    F1_MACRO: True,
    ROC_AUC: True,
    R2: True,
    RMSE: False,
    MAE: False,
    LOG_LOSS: False,
}
"""The metrics nb2prod computes itself, and their direction."""

CLASSIFICATION = (ACCURACY, F1_MACRO)
REGRESSION = (MAE, RMSE)

# Words that mark a user's own metric as an error (lower is better), e.g. ``val_loss``.
_LOWER_WORDS = ("loss", "mae", "mse", "rmse", "error", "mape")
_SPLIT_PREFIXES = ("training_", "train_", "test_", "val_", "valid_", "validation_")


def base_name(metric: str) -> str:
    """``test_accuracy`` -> ``accuracy``: the metric without its data-split prefix."""
    low = metric.lower()
    for prefix in _SPLIT_PREFIXES:
        if low.startswith(prefix):
            return low[len(prefix) :]
    return low


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (known metrics by table, others by name)."""
    base = base_name(metric)
    if base in HIGHER_IS_BETTER:
        return not HIGHER_IS_BETTER[base]
    return any(word in metric.lower() for word in _LOWER_WORDS)
