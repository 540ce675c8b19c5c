"""Run settings shared by the configs in this folder (every key of DESIGN.md's `train`, with its default)."""

train = dict(
    max_iter=1000,
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
    ddp=dict(find_unused_parameters=False, broadcast_buffers=False),
    deterministic=False,
)
