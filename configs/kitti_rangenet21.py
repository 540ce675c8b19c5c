"""RangeNet++ with Darknet21 on SemanticKITTI, as the authors train it (PRBonn/lidar-bonnetal,
train/tasks/semantic/config/arch/darknet21.yaml; Milioto et al., IROS 2019: 47.4 mIoU on the test set, without
KNN). A GPU run on the real data set (about 1.4M iterations):
    lazytrain train configs/kitti_rangenet21.py dataset.root=/path/to/SemanticKITTI

The recipe (darknet21.yaml):
- images 64 x 2048 (sensor.img_prop), the sensor's means and stds (lazytrain's KITTI_MEANS / KITTI_STDS)
- SGD lr 0.01, momentum 0.9, weight decay 1e-4; warm-up from 0 over 1 epoch (wup_epochs), then the learning
  rate times 0.995 per epoch (lr_decay); batch size 2 (the total: `dataloader.train.batch_size` is per process);
  150 epochs of 19130 // 2 = 9565 iterations (max_epochs; drop_last as theirs)
- dropout 0.01 in backbone, decoder and head; batch-norm momentum 0.01 (bn_d); output stride 32
- weighted cross-entropy 1 / (f + 0.001) (epsilon_w); no augmentation (their parser has none)
- evaluation each epoch (report_epoch); KNN off as in their file (post.KNN.use: False). RangeNet21++ with their
  KNN parameters: evaluator.knn="{knn: 5, search: 5, sigma: 1.0, cutoff: 1.0}"
The authors' released model (a folder with backbone, segmentation_decoder, segmentation_head, arch_cfg.yaml):
    lazytrain eval configs/kitti_rangenet21.py --weights /path/to/darknet21 dataset.root=/path/to/SemanticKITTI
"""

from fvcore.common.param_scheduler import ExponentialParamScheduler

from lazytrain.config import LazyCall as L
from lazytrain.engine import WarmupParamScheduler

from .common.darknet import model, optimizer
from .common.kitti_data import dataloader, dataset
from .common.rangenet import evaluator, export, predict
from .common.train import train

_EPOCHS, _WARMUP_EPOCHS, _LR_DECAY, _BATCH = 150, 1, 0.995, 2
_ITERS_PER_EPOCH = 19130 // _BATCH  # the training split: 19130 scans of sequences 00-07, 09, 10

model.layers = 21
optimizer.lr = 0.01
# lidar-bonnetal's warmupLR: from 0 up to lr over the warm-up, then times _LR_DECAY per epoch (1 where it ends)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(ExponentialParamScheduler)(start_value=_LR_DECAY**-_WARMUP_EPOCHS, decay=_LR_DECAY**_EPOCHS),
    warmup_length=_WARMUP_EPOCHS / _EPOCHS,
    warmup_factor=0.0,
)

dataset.projection.width = 2048
dataloader.train.batch_size = _BATCH
dataloader.train.dataset.augment = False
dataloader.test.batch_size = 1

train.max_iter = _EPOCHS * _ITERS_PER_EPOCH
train.eval_period = _ITERS_PER_EPOCH
train.checkpoint_period = _ITERS_PER_EPOCH
train.output_dir = "output/kitti_rangenet21"
