"""CENet, stage 3 of 3 (kitti.sh of huixiancheng/CENet): 64 x 2048, starting from the best weights of
kitti_cenet_1024.py, with config/arch/senet-2048p.yml's changes to stage 1 (configs/kitti_cenet.py): 30 epochs
(30 x 3188 = 95640 iterations of batch 6) and one cosine cycle of 30 epochs (1 epoch of warm-up from 0.0001 to
0.01, a cosine back to 0.0001). Everything else is stage 1's.
    lazytrain train configs/kitti_cenet_2048.py dataset.root=/path/to/SemanticKITTI [train.init_checkpoint=...]
"""

from fvcore.common.param_scheduler import CompositeParamScheduler, CosineParamScheduler, LinearParamScheduler

from lazytrain.config import LazyCall as L

from .kitti_cenet import dataloader, dataset, evaluator, export, model, optimizer, predict, train

dataset.projection.width = 2048
lr_multiplier = L(CompositeParamScheduler)(
    schedulers=[L(LinearParamScheduler)(0.01, 1.0), L(CosineParamScheduler)(1.0, 0.01)],
    lengths=[1 / 30, 29 / 30],
    interval_scaling=["rescaled", "rescaled"],
)
train.max_iter = 30 * 3188
train.init_checkpoint = "output/kitti_cenet_1024/checkpoints/model_best.pth"
train.output_dir = "output/kitti_cenet_2048"
