"""CENet (Cheng et al., ICME 2022) with the recipe of the authors' config/arch/senet-*.yml (huixiancheng/CENet):
the "res" pipeline with Hardswish and 3 auxiliary heads, its losses (weighted NLL + 1.5 Lovász-Softmax + boundary
loss on every head), SGD with cosine annealing and warm restarts, KNN knn=7 search=7
cutoff=2.0, the point-wise evaluation and the benchmark submission."""

from fvcore.common.param_scheduler import CompositeParamScheduler, CosineParamScheduler, LinearParamScheduler
from torch.optim import SGD

from lazytrain.config import LazyCall as L
from lazytrain.lidar import (
    AuxiliaryHeadLosses,
    BoundaryLoss,
    CENet,
    ClassWeightsFromLabels,
    LossTerms,
    LovaszSoftmaxLoss,
    SemanticKittiEvaluator,
    SemanticKittiSubmission,
    WeightedNLLLoss,
)

model = L(CENet)(
    in_channels=5,
    num_classes="${dataset.num_classes}",
    act="hardswish",  # train.act: "Hardswish" (their trainer swaps every LeakyReLU of the network for it)
    aux_heads=True,  # train.aux_loss: True
    loss=L(AuxiliaryHeadLosses)(
        losses=L(LossTerms)(
            terms=dict(
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
                boundary=L(BoundaryLoss)(kernel=3),
            ),
            weights=dict(lovasz=1.5),  # trainer.py: criterion + 1.5 * Lovász, + the boundary loss
        ),
        aux_weight=1.0,  # train.lamda
    ),
)

# train.consine: SGD from min_lr 0.0001 warmed up over wup_epochs = 1 to max_lr 0.01, cosine back to min_lr over
# the first_cycle, restarted (cycle 1, gamma 1.0) until max_epochs; momentum 0.9, w_decay 0.0001
optimizer = L(SGD)(lr=0.01, momentum=0.9, weight_decay=1e-4)

# senet-512.yml: max_epochs 100, first_cycle 50 (two cycles); the 1024 / 2048 stages set their own (one cycle)
lr_multiplier = L(CompositeParamScheduler)(
    schedulers=[
        L(LinearParamScheduler)(0.01, 1.0),  # 0.0001 -> 0.01 over epoch 1
        L(CosineParamScheduler)(1.0, 0.01),  # 0.01 -> 0.0001 over epochs 2-50
        L(LinearParamScheduler)(0.01, 1.0),  # the restart: epoch 51
        L(CosineParamScheduler)(1.0, 0.01),  # epochs 52-100
    ],
    lengths=[1 / 100, 49 / 100, 1 / 100, 49 / 100],
    interval_scaling=["rescaled"] * 4,
)

# post.KNN: use True, knn 7, search 7, sigma 1.0, cutoff 2.0
evaluator = L(SemanticKittiEvaluator)(
    num_classes="${dataset.num_classes}", knn={"knn": 7, "search": 7, "sigma": 1.0, "cutoff": 2.0}, picture_scans=3
)
predict = dict(
    split="test",
    writer=L(SemanticKittiSubmission)(
        num_classes="${dataset.num_classes}", knn="${evaluator.knn}", dataset_root="${dataset.root}"
    ),
)
export = dict(input_keys=["image"], output_names=["logits"], dynamic_batch=True)
