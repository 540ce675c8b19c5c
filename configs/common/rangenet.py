"""A RangeNet-style model, its loss weights from the training labels, the point-wise evaluation as the
official semantic-kitti-api computes it (mIoU over the 19 classes, point accuracy, pictures of a few scans),
and the benchmark submission `lazytrain predict` writes."""

from lazytrain.config import LazyCall as L
from lazytrain.config import config_dict
from lazytrain.lidar import ClassWeightsFromLabels, RangeNet, SemanticKittiEvaluator, SemanticKittiSubmission

model = L(RangeNet)(
    in_channels=5,
    num_classes="${dataset.num_classes}",
    width=32,
    depth=4,
    blocks=1,
    # RangeNet++'s 1 / (f + 0.001) from the labels of the whole training split, computed at the first training
    # step (or taken from the checkpoint): building the model for eval or export reads no training labels
    class_weights=L(ClassWeightsFromLabels)(
        root="${dataset.root}",
        num_classes="${dataset.num_classes}",
        split="train",
        sequences="${dataloader.train.dataset.sequences}",
    ),
)

# picture_scans: the first N validation scans drawn at each evaluation (TensorBoard val/scans/...)
evaluator = L(SemanticKittiEvaluator)(num_classes="${dataset.num_classes}", knn=None, picture_scans=3)
# RangeNet++'s KNN post-processing with its parameters (inverse-Gaussian weighted range differences):
#   evaluator.knn="{knn: 5, search: 5, sigma: 1.0, cutoff: 1.0}"

# `lazytrain predict CONFIG --weights CKPT [--split test]`: sequences/<SS>/predictions/<NNNNNN>.label, every
# point of every scan labelled (through the evaluator's KNN when it has one), ready to zip for the benchmark
predict = config_dict(
    split="test",
    writer=L(SemanticKittiSubmission)(
        num_classes="${dataset.num_classes}", knn="${evaluator.knn}", dataset_root="${dataset.root}"
    ),
)

export = config_dict(input_keys=["image"], output_names=["logits"], dynamic_batch=True)
