"""Run settings shared by the configs in this folder (DESIGN.md "train keys and defaults")."""

train = dict(
    max_iter=400,
    seed=0,
    device="auto",
    amp=dict(enabled=False, dtype="bf16"),
    grad_accum=1,
    clip_grad=dict(max_norm=None, norm_type=2.0),
    log_period=20,
    checkpoint_period=1000,
    keep_last=3,
    eval_period=0,
    init_checkpoint="",
    deterministic=False,
)
