"""SalsaNext (Cortinhal et al. 2020; SemanticKITTI test mIoU 59.5, 6.7M parameters) with the authors' recipe,
from salsanext.yml and train/tasks/semantic/modules/trainer.py of TiagoCortinhal/SalsaNext:
- input 64 x 2048 (img_prop), RangeNet++'s channel statistics (img_means / img_stds, lazytrain's defaults);
- SGD lr 0.01, momentum 0.9, weight decay 1e-4; a linear warm-up from 0 over 1 epoch, then x0.99 per epoch;
- batch 24, 150 epochs: 19130 training scans // 24 = 797 iterations an epoch (drop_last), 119550 in all;
- loss: NLL weighted 1 / (f + 0.001) (f from the training labels) + Lovász-Softmax, class 0 ignored;
- dropout 0.2 (Dropout2d where the authors have it); evaluated every epoch, the best mIoU kept (model_best.pth);
- KNN post-processing knn 5, search 5, sigma 1.0, cutoff 1.0 (salsanext.yml post.KNN, on).
Not the authors': augmentation is lazytrain's dataset's (random yaw, mirror, point dropout up to 10%); theirs is,
half of the time, each with probability 0.5: a translation jitter (x +-5 m, y +-3 m, z -1..0 m), a y flip, and
dropping up to 50% of the points.

Train on the real data set (GPU):
    lazytrain train configs/kitti_salsanext.py dataset.root=/path/to/SemanticKITTI
Evaluate the authors' pretrained model (their folder with the file `SalsaNext`, or the file) on the validation
split, with KNN (or evaluator.knn=null without):
    lazytrain eval configs/kitti_salsanext.py --weights /path/to/pretrained dataset.root=/path/to/SemanticKITTI
Fine-tune from it: train.init_checkpoint=/path/to/pretrained/SalsaNext.
"""

from .common.kitti_data import dataloader, dataset
from .common.salsanext import evaluator, export, lr_multiplier, model, optimizer, predict
from .common.train import train

dataset.projection.width = 2048
dataloader.train.batch_size = 24
dataloader.train.num_workers = 4  # salsanext.yml: workers
dataloader.test.batch_size = 1  # their infer and validation run one scan at a time (full resolution)

train.max_iter = 150 * 797
train.eval_period = 797  # every epoch (report_epoch: 1)
train.checkpoint_period = 797
train.best = dict(metric="mIoU", mode="max")  # their SalsaNext_valid_best
train.log_period = 10  # report_batch
train.output_dir = "output/kitti_salsanext"
