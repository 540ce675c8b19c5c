"""SalsaNext (Cortinhal et al. 2020) with the recipe of the authors' salsanext.yml (TiagoCortinhal/SalsaNext):
the model and its losses (weighted NLL + Lovász-Softmax), SGD with a one-epoch warm-up and a per-epoch decay,
RangeNet++'s KNN post-processing, the point-wise evaluation and the benchmark submission."""

from fvcore.common.param_scheduler import CompositeParamScheduler, ExponentialParamScheduler, LinearParamScheduler
from torch.optim import SGD

from lazytrain.config import LazyCall as L
from lazytrain.lidar import (
    ClassWeightsFromLabels,
    LossTerms,
    LovaszSoftmaxLoss,
    SalsaNext,
    SemanticKittiEvaluator,
    SemanticKittiSubmission,
    WeightedNLLLoss,
)

_epochs = 150  # salsanext.yml: max_epochs

model = L(SalsaNext)(
    in_channels=5,
    num_classes="${dataset.num_classes}",
    dropout=0.2,
    loss=L(LossTerms)(
        terms=dict(
            # NLLLoss(1 / (f + 0.001)) of log(softmax.clamp(1e-8)); RangeNet++'s weights from the training labels
            nll=L(WeightedNLLLoss)(
                class_weights=L(ClassWeightsFromLabels)(
                    root="${dataset.root}",
                    num_classes="${dataset.num_classes}",
                    split="train",
                    sequences="${dataloader.train.dataset.sequences}",
                ),
                ignore_index=0,
            ),
            lovasz=L(LovaszSoftmaxLoss)(ignore_index=0),
        ),
    ),
)

# salsanext.yml: lr 0.01, momentum 0.9, w_decay 0.0001
optimizer = L(SGD)(lr=0.01, momentum=0.9, weight_decay=1e-4)
# warmupLR: linear from 0 over wup_epochs = 1, then lr_decay = 0.99 per epoch (applied per iteration)
lr_multiplier = L(CompositeParamScheduler)(
    schedulers=[L(LinearParamScheduler)(0.0, 1.0), L(ExponentialParamScheduler)(1.0, 0.99 ** (_epochs - 1))],
    lengths=[1 / _epochs, 1 - 1 / _epochs],
    interval_scaling=["rescaled", "rescaled"],
)

# salsanext.yml post.KNN: use True, knn 5, search 5, sigma 1.0, cutoff 1.0 (the paper's numbers are with it)
evaluator = L(SemanticKittiEvaluator)(
    num_classes="${dataset.num_classes}", knn={"knn": 5, "search": 5, "sigma": 1.0, "cutoff": 1.0}, picture_scans=3
)
predict = dict(
    split="test",
    writer=L(SemanticKittiSubmission)(
        num_classes="${dataset.num_classes}", knn="${evaluator.knn}", dataset_root="${dataset.root}"
    ),
)
export = dict(input_keys=["image"], output_names=["logits"], dynamic_batch=True)
