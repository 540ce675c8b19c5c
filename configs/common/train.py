"""Run settings shared by the configs in this folder. Every other `train` key takes its default (README.md,
"Run settings"; `lazytrain config CONFIG` prints them all). `config_dict` rather than `dict`: the configs that
import it set `train.max_iter = ...`, and so the editor checks that as a DictConfig's attribute."""

from lazytrain.config import config_dict

train = config_dict(
    max_iter=1000,
    log_period=20,
    checkpoint_period=1000,
    eval_period=0,
    amp=dict(enabled=False, dtype="bf16"),
)
