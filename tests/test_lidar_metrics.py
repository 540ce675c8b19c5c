"""SemanticKITTI metrics: mIoU and accuracy as the official semantic-kitti-api computes them, and RangeNet++'s
KNN post-processing against hand-computed results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import REPO, load_config

from lazytrain.config import instantiate
from lazytrain.errors import ConfigError
from lazytrain.lidar import SemanticKittiEvaluator, iou_from_confusion, knn_postprocess
from lazytrain.lidar.evaluator import inverse_gaussian_kernel


def official_evaluation(pred: np.ndarray, gt: np.ndarray, n_classes: int, ignore: tuple[int, ...] = (0,)):
    """semantic-kitti-api's np_ioueval, written out here independently: confusion (prediction × ground truth),
    ground-truth columns of the ignored classes zeroed, IoU with 1e-15 in the denominator, mean over the rest."""
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (pred, gt), 1)
    conf[:, list(ignore)] = 0
    tp = np.diag(conf)
    fp = conf.sum(axis=1) - tp
    fn = conf.sum(axis=0) - tp
    include = [c for c in range(n_classes) if c not in ignore]
    iou = tp / (tp + fp + fn + 1e-15)
    accuracy = tp.sum() / (tp[include].sum() + fp[include].sum() + 1e-15)
    return iou[include].mean(), iou, accuracy


def evaluate_points(evaluator: SemanticKittiEvaluator, pred: np.ndarray, gt: np.ndarray) -> dict:
    """Run the evaluator's metric on point-wise predictions (any class, 0 included, as another model might give)."""
    evaluator.reset()
    evaluator.add(torch.from_numpy(gt), torch.from_numpy(pred))
    return evaluator.evaluate()


def test_miou_and_accuracy_equal_the_official_evaluation_with_an_absent_class():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 20, 5000)
    pred = np.where(rng.random(5000) < 0.6, gt, rng.integers(0, 20, 5000))
    absent = 7  # "bicyclist": absent from the ground truth and never predicted
    gt[gt == absent], pred[pred == absent] = 9, 9
    pred[:50] = 0  # labelled points predicted as unlabeled, and unlabeled points predicted as something
    official_miou, official_iou, official_accuracy = official_evaluation(pred, gt, 20)

    results = evaluate_points(SemanticKittiEvaluator(num_classes=20), pred, gt)
    assert results["mIoU"] == pytest.approx(official_miou, rel=1e-12, abs=0)
    assert results["accuracy"] == pytest.approx(official_accuracy, rel=1e-12, abs=0)
    assert results["IoU/bicyclist"] == 0.0
    assert len([k for k in results if k.startswith("IoU/")]) == 19
    for c in range(1, 20):
        name = SemanticKittiEvaluator().class_names[c]
        assert results[f"IoU/{name}"] == pytest.approx(official_iou[c], rel=1e-12, abs=0)

    # the other rule, only when asked for by name: the absent class leaves the mean (official x 19/18)
    skipped = evaluate_points(SemanticKittiEvaluator(num_classes=20, skip_absent_classes=True), pred, gt)
    assert "IoU/bicyclist" not in skipped
    assert skipped["mIoU"] == pytest.approx(official_miou * 19 / 18, rel=1e-12)


def test_miou_against_a_hand_computed_confusion_matrix():
    # 4 classes, 0 ignored. rows: ground truth, columns: prediction
    confusion = torch.tensor([[5, 1, 0, 0], [1, 8, 2, 0], [0, 1, 3, 0], [0, 0, 0, 0]])
    iou, miou = iou_from_confusion(confusion)
    assert iou[1].item() == pytest.approx(8 / (8 + 1 + 2 + 1))  # the unlabeled row does not count as FP
    assert iou[2].item() == pytest.approx(3 / (3 + 2 + 1))
    assert iou[3].item() == 0.0 and torch.isnan(iou[0])  # class 3: absent, never predicted: 0, in the mean
    assert miou == pytest.approx((8 / 12 + 3 / 6 + 0) / 3)
    _, skipped = iou_from_confusion(confusion, skip_absent_classes=True)
    assert skipped == pytest.approx((8 / 12 + 3 / 6) / 2)


def test_evaluator_back_projects_pixels_to_every_point():
    ev = SemanticKittiEvaluator(num_classes=4, class_names=["unlabeled", "a", "b", "c"])
    logits = torch.zeros(1, 4, 2, 2)
    logits[0, 1, 0, 0] = logits[0, 2, 0, 1] = logits[0, 2, 1, 0] = logits[0, 1, 1, 1] = 5
    batch = {
        "proj_v": [torch.tensor([0, 0, 0, 1, 1])],
        "proj_u": [torch.tensor([0, 0, 1, 0, 1])],
        "point_labels": [torch.tensor([1, 2, 2, 0, 1])],
    }  # two points share pixel (0, 0)
    ev.process(batch, logits)
    results = ev.evaluate()
    assert ev.confusion[1, 1] == 2 and ev.confusion[2, 1] == 1 and ev.confusion[2, 2] == 1
    assert results["IoU/a"] == pytest.approx(2 / 3) and results["IoU/b"] == pytest.approx(1 / 2)
    assert results["IoU/c"] == 0.0 and results["mIoU"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert results["accuracy"] == pytest.approx(3 / 4)


# RangeNet++'s weights of a 3 x 3 window with sigma = 1 pixel: 1 - exp(-d² / 2) / sum, by hand
_SUM = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
CENTRE, EDGE, CORNER = 1 - 1 / _SUM, 1 - math.exp(-0.5) / _SUM, 1 - math.exp(-1) / _SUM  # .7958 .8762 .9249


def knn3(range_image, pred_image, v, u, point_range, knn):
    return knn_postprocess(
        torch.tensor(range_image, dtype=torch.float32), torch.tensor(pred_image), torch.tensor(v),
        torch.tensor(u), torch.tensor(point_range, dtype=torch.float32), num_classes=8, knn=knn, search=3,
        sigma=1.0, cutoff=1.0,
    ).tolist()  # fmt: skip


def test_knn_weighs_range_differences_by_the_inverse_gaussian():
    kernel = inverse_gaussian_kernel(3, 1.0).reshape(3, 3)
    expected = [[CORNER, EDGE, CORNER], [EDGE, CENTRE, EDGE], [CORNER, EDGE, CORNER]]
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-6)
    assert inverse_gaussian_kernel(5, 1.0).shape == (25,)
    # a point at 10 m in the centre pixel (class 1). Plain range differences: corner 0.96 (class 3) beats edge
    # 1.0 (class 2) and the 3 nearest vote 1, 2, 3 (a tie: class 1). Weighted: edge 1.0 * .876 = .876 beats
    # corner 0.96 * .925 = .888, so the 3 nearest are the centre and both edges: 1, 2, 2 -> class 2.
    ranges = [[10.96, 11.0, 0], [10.9, 10.0, 0], [0, 0, 0]]  # 0: empty pixels (their predictions never count)
    preds = [[3, 2, 5], [2, 1, 5], [5, 5, 5]]
    assert knn3(ranges, preds, [1], [1], [10.0], knn=3) == [2]


def test_knn_centre_pixel_uses_the_points_own_range():
    # pixel (1, 1) shows its closest point (10 m, class 1); a second point of that pixel lies at 20 m, next to
    # a 20.5 m neighbour of class 2. With its own range at the centre, the centre is at distance 0 and wins
    # (k = 1); with the pixel's range it would be (20 - 10) * .796 = 7.96 away and the neighbour (.44) would win.
    ranges = [[0, 20.5, 0], [0, 10.0, 0], [0, 0, 0]]
    preds = [[2, 2, 2], [2, 1, 2], [2, 2, 2]]
    assert knn3(ranges, preds, [1, 1], [1, 1], [10.0, 20.0], knn=1) == [1, 1]
    assert 0.5 * EDGE < 1.0 < (20 - 10) * CENTRE


def test_knn_votes_exclude_class_0_and_the_cutoff_so_the_result_is_never_0():
    # centre and the two nearest neighbours are class 0 (no votes); class 4 at 1.1 m is within the cutoff once
    # weighted (1.1 * .876 = .964 < 1); class 6 at 2 m is beyond it (2 * .925 = 1.85): class 4 wins 1 to none
    ranges = [[12.0, 10.2, 0], [10.1, 10.0, 11.1], [0, 0, 0]]
    preds = [[6, 0, 7], [0, 0, 4], [7, 7, 7]]
    assert knn3(ranges, preds, [1], [1], [10.0], knn=5) == [4]
    assert 1.1 * EDGE < 1.0 < 2.0 * CORNER
    # no valid vote at all (class 0 or beyond the cutoff): RangeNet++'s vote over classes 1.. gives class 1
    preds = [[6, 0, 6], [0, 0, 6], [6, 6, 6]]
    ranges = [[12.0, 10.2, 15.0], [10.1, 10.0, 15.0], [0, 0, 0]]
    assert knn3(ranges, preds, [1], [1], [10.0], knn=5) == [1]


def test_knn_is_an_evaluator_override_with_rangenet_parameters(tmp_path):
    cfg = load_config(REPO / "configs" / "kitti_seg.py", f"dataset.root={tmp_path}",
                      "evaluator.knn={knn: 5, search: 5, sigma: 1.0, cutoff: 1.0}")  # fmt: skip
    evaluator = instantiate(cfg.evaluator, key="evaluator")
    assert evaluator.knn == {"knn": 5, "search": 5, "sigma": 1.0, "cutoff": 1.0}
    assert SemanticKittiEvaluator(knn={"cutoff": 0.5}).knn == {"knn": 5, "search": 5, "sigma": 1.0, "cutoff": 0.5}
    old_names = r"knn has no setting 'k'; RangeNet\+\+'s KNN takes knn, search, sigma, cutoff"
    with pytest.raises(ConfigError, match=old_names):
        SemanticKittiEvaluator(knn={"k": 5, "window": 5})
    with pytest.raises(ConfigError, match=r"knn\.search must be an odd window size"):
        SemanticKittiEvaluator(knn={"search": 4})


def test_evaluator_applies_knn_to_each_point():
    ev = SemanticKittiEvaluator(num_classes=4, class_names=["unlabeled", "a", "b", "c"],
                                knn={"knn": 1, "search": 3})  # fmt: skip
    logits = torch.zeros(1, 4, 3, 3)
    logits[0, 2] = 1.0  # every pixel predicts b ...
    logits[0, 1, 1, 1] = 2.0  # ... but the centre one predicts a
    batch = {"proj_v": [torch.tensor([1, 1])], "proj_u": [torch.tensor([1, 1])],
             "point_labels": [torch.tensor([1, 2])], "point_range": [torch.tensor([10.0, 20.0])],
             "range_image": [torch.tensor([[0, 20.5, 0], [0, 10.0, 0], [0, 0, 0]])]}  # fmt: skip
    ev.process(batch, logits)
    assert ev.confusion[1, 1] == 1 and ev.confusion[2, 1] == 1  # both take the centre pixel's class (k = 1)
