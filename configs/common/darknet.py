"""RangeNet++ (Milioto et al., IROS 2019) as PRBonn/lidar-bonnetal trains it: the Darknet network, its weighted
cross-entropy and SGD (the configs kitti_rangenet21.py / kitti_rangenet53.py set their files' numbers and the
schedule); the evaluator, KNN and submission are configs/common/rangenet.py's."""

import torch

from lazytrain.config import LazyCall as L
from lazytrain.lidar import ClassWeightsFromLabels, RangeNetPP

model = L(RangeNetPP)(
    layers=21,
    num_classes="${dataset.num_classes}",
    in_channels=5,  # range, x, y, z, remission (arch_cfg input_depth: all true)
    width=32,
    output_stride=32,  # backbone.OS
    dropout=0.01,  # backbone.dropout = decoder.dropout = head.dropout
    bn_momentum=0.01,  # bn_d
    # 1 / (f + epsilon_w), epsilon_w = 0.001, class 0 weighted 0; from the labels of the training split (the
    # authors take f from data_cfg.yaml's `content`, the same fractions counted over the whole data set)
    class_weights=L(ClassWeightsFromLabels)(
        root="${dataset.root}",
        num_classes="${dataset.num_classes}",
        split="train",
        sequences="${dataloader.train.dataset.sequences}",
    ),
)

optimizer = L(torch.optim.SGD)(lr=0.01, momentum=0.9, weight_decay=1e-4)
