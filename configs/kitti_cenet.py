"""CENet (Cheng et al., ICME 2022; SemanticKITTI test mIoU 64.7, 6.8M parameters), stage 1 of the authors'
three (kitti.sh of huixiancheng/CENet: 64 x 512, then 64 x 1024 and 64 x 2048 each starting from the last), with
the recipe of config/arch/senet-512.yml and modules/trainer.py:
- the "res" pipeline (ResNet-34 blocks), Hardswish, 3 auxiliary heads (aux_loss, lamda 1.0);
- input 64 x 512, the authors' channel statistics (img_means / img_stds below, not RangeNet++'s);
- SGD momentum 0.9, weight decay 1e-4; cosine annealing with warm restarts: per cycle of 50 epochs a linear
  warm-up over 1 epoch from 0.0001 to 0.01 and a cosine back to 0.0001 (two cycles);
- batch 6, 100 epochs: 19130 training scans // 6 = 3188 iterations an epoch (drop_last), 318800 in all;
- loss on the main head and on each auxiliary head (weight 1): NLL weighted 1 / (f + 0.001) + 1.5 x
  Lovász-Softmax + the boundary loss;
- evaluated every epoch, the best mIoU kept (model_best.pth, their SENet_valid_best, which the next stage loads);
- KNN post-processing knn 7, search 7, sigma 1.0, cutoff 2.0 (post.KNN, on).
Not the authors' by default: they train under fp16 autocast with a GradScaler (add train.amp.enabled=True
train.amp.dtype=fp16 on a GPU); augmentation is lazytrain's dataset's (random yaw, mirror, point dropout up to
10%), theirs is, half of the time, each with probability 0.5: a translation jitter, a y flip, a random yaw
(N(0, 90) degrees), and dropping up to 50% of the points.

The three stages (GPU):
    lazytrain train configs/kitti_cenet.py dataset.root=/path/to/SemanticKITTI
    lazytrain train configs/kitti_cenet_1024.py dataset.root=/path/to/SemanticKITTI
    lazytrain train configs/kitti_cenet_2048.py dataset.root=/path/to/SemanticKITTI
(each later stage's train.init_checkpoint is the stage before's model_best.pth). Evaluate the authors' model
(their folder with `SENet_valid_best`, or the file) at 64 x 2048:
    lazytrain eval configs/kitti_cenet_2048.py --weights /path/to/pretrained dataset.root=/path/to/SemanticKITTI
"""

from .common.cenet import evaluator, export, lr_multiplier, model, optimizer, predict
from .common.kitti_data import dataloader, dataset
from .common.train import train

dataset.projection.width = 512
for _loader in (dataloader.train, dataloader.test, dataloader.predict):
    # img_means / img_stds of senet-*.yml (range, x, y, z, remission)
    _loader.dataset.means = [11.71279, -0.1023471, 0.4952, -1.0545, 0.2877]
    _loader.dataset.stds = [10.24, 12.295865, 9.4287, 0.8643, 0.1450]
dataloader.train.batch_size = 6
dataloader.train.num_workers = 6  # workers
dataloader.test.batch_size = 1  # their infer runs one scan at a time

train.max_iter = 100 * 3188
train.eval_period = 3188  # every epoch (report_epoch: 1)
train.checkpoint_period = 3188
train.best = dict(metric="mIoU", mode="max")
train.log_period = 100  # report_batch
train.output_dir = "output/kitti_cenet"
