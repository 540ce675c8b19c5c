"""Train toyproj's MLP on Gaussian blobs: every component is imported, nothing is registered."""

import torch
from fvcore.common.param_scheduler import CosineParamScheduler
from toyproj.data import BlobsDataset
from toyproj.evaluator import AccuracyEvaluator
from toyproj.hooks import ParamNormLogger
from toyproj.model import MLPClassifier

from lazytrain.config import LazyCall as L
from lazytrain.data import build_test_loader, build_train_loader
from lazytrain.engine import WarmupParamScheduler

data = dict(num_features=8, num_classes=4)

dataloader = dict(
    train=L(build_train_loader)(
        dataset=L(BlobsDataset)(
            num_samples=512, num_features="${data.num_features}", num_classes="${data.num_classes}", seed=0, jitter=0.1
        ),
        batch_size=32,
        seed="${train.seed}",
    ),
    test=L(build_test_loader)(
        dataset=L(BlobsDataset)(
            num_samples=256, num_features="${data.num_features}", num_classes="${data.num_classes}", seed=1
        ),
        batch_size=64,
    ),
)
model = L(MLPClassifier)(in_features="${data.num_features}", num_classes="${data.num_classes}", hidden=32)
optimizer = L(torch.optim.SGD)(lr=0.1, momentum=0.9)
lr_multiplier = L(WarmupParamScheduler)(scheduler=L(CosineParamScheduler)(1.0, 0.05), warmup_length=0.1)
evaluator = L(AccuracyEvaluator)()
hooks = [L(ParamNormLogger)(period=20)]

train = dict(max_iter=200, log_period=20, checkpoint_period=100, eval_period=100, output_dir="output/toy")

# `lazytrain export`: the graph takes batch["x"] and returns the logits
export = dict(input_keys=["x"], output_names=["logits"], dynamic_batch=True)
