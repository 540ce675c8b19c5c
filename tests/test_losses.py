"""The papers' losses: Lovász-Softmax against the definition (the Lovász extension of the Jaccard loss), the
weighted NLL against a hand computation, the boundary loss on a case with a known answer, and how the terms
combine over auxiliary heads."""

import itertools
import math

import pytest
import torch

from lazytrain.lidar.losses import (
    AuxiliaryHeadLosses,
    BoundaryLoss,
    LossTerms,
    LovaszSoftmaxLoss,
    WeightedNLLLoss,
    lovasz_softmax,
)


def jaccard_loss_of_errors(errors: set[int], foreground: set[int]) -> float:
    """Berman et al.'s Δ_J(M) = |M| / |F ∪ M| for the set M of mispredicted pixels and the foreground F."""
    if not errors:
        return 0.0
    return len(errors) / len(foreground | errors)


def lovasz_extension(errors: list[float], foreground: set[int]) -> float:
    """The Lovász extension of Δ_J at the error vector, by its integral form: ∫_0^max Δ_J({i: m_i >= t}) dt,
    a sum over the distinct error values (no sorting of pixels, no cumulative sums)."""
    levels = [*sorted(set(errors), reverse=True), 0.0]
    total = 0.0
    for upper, lower in itertools.pairwise(levels):
        above = {i for i, m in enumerate(errors) if m >= upper}
        total += (upper - lower) * jaccard_loss_of_errors(above, foreground)
    return total


def direct_lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore, classes: str) -> float:
    """probs (P, C), labels (P,): the mean over classes (present ones, or all) of the extension at each class's
    errors |[y = c] - p_c|, ignored pixels left out."""
    rows = [i for i in range(len(labels)) if ignore is None or int(labels[i]) != ignore]
    per_class = []
    for c in range(probs.shape[1]):
        foreground = {k for k, i in enumerate(rows) if int(labels[i]) == c}
        if classes == "present" and not foreground:
            continue
        errors = [abs((1.0 if int(labels[i]) == c else 0.0) - float(probs[i, c])) for i in rows]
        per_class.append(lovasz_extension(errors, foreground))
    return sum(per_class) / len(per_class)


def random_case(seed: int, pixels: int, num_classes: int, label_values):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(pixels, num_classes, generator=g, dtype=torch.float64) * 2, dim=1)
    labels = torch.tensor(label_values[:pixels])
    return probs, labels


@pytest.mark.parametrize(
    "case, labels, ignore, classes",
    [
        ("all classes present", [0, 1, 2, 3, 1, 2, 3, 0, 0, 1, 2, 3], None, "present"),
        ("classes absent", [1, 1, 3, 1, 3, 3, 1, 1, 3, 1, 1, 3], None, "present"),
        ("classes absent, averaged over all", [1, 1, 3, 1, 3, 3, 1, 1, 3, 1, 1, 3], None, "all"),
        ("ignore label", [0, 1, 0, 2, 2, 0, 3, 1, 0, 0, 2, 1], 0, "present"),
        ("ignore label, one class left", [0, 2, 0, 2, 2, 0, 0, 0, 2, 0, 0, 2], 0, "present"),
    ],
)
def test_lovasz_softmax_equals_the_lovasz_extension_of_the_jaccard_loss(case, labels, ignore, classes):
    for seed in range(3):
        probs, label_tensor = random_case(seed, 12, 4, labels)
        expected = direct_lovasz_softmax(probs, label_tensor, ignore, classes)
        got = float(lovasz_softmax(probs, label_tensor, ignore_index=ignore, classes=classes))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), case


def test_lovasz_softmax_of_images_is_that_of_their_pixels_and_ignores_the_ignored_class():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 5, (2, 3, 4), generator=g)
    flat_probs = probs.permute(0, 2, 3, 1).reshape(-1, 5)
    expected = direct_lovasz_softmax(flat_probs, labels.reshape(-1), 0, "present")
    assert float(LovaszSoftmaxLoss(ignore_index=0)(probs, labels)) == pytest.approx(expected, rel=1e-9)
    # what an ignored pixel predicts does not matter
    changed = probs.permute(0, 2, 3, 1).clone()
    changed[labels == 0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    changed = changed.permute(0, 3, 1, 2)
    assert bool((labels == 0).any()) and not torch.equal(changed, probs)
    assert float(lovasz_softmax(changed, labels)) == pytest.approx(float(lovasz_softmax(probs, labels)), rel=1e-12)


def test_lovasz_softmax_is_zero_for_a_perfect_prediction_and_when_every_pixel_is_ignored():
    labels = torch.tensor([[1, 2], [3, 1]])
    perfect = torch.nn.functional.one_hot(labels, 4).permute(2, 0, 1)[None].double()
    assert float(lovasz_softmax(perfect, labels[None])) == 0.0
    probs = torch.full((1, 4, 2, 2), 0.25, requires_grad=True)
    loss = lovasz_softmax(probs, torch.zeros(1, 2, 2, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0 and probs.grad is not None and float(probs.grad.abs().sum()) == 0.0


def test_weighted_nll_is_the_weighted_mean_of_minus_log_probabilities_of_the_labelled_pixels():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.5, 0.0], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 1, 2, 2])  # the first pixel is class 0: ignored
    weights = [0.0, 2.0, 0.5]
    loss = WeightedNLLLoss(class_weights=weights)(probs[None].permute(0, 2, 1)[..., None], labels[None, :, None])
    terms = [(2.0, -math.log(0.3)), (0.5, -math.log(1e-8)), (0.5, -math.log(0.6))]  # p = 0 is clamped to 1e-8
    expected = sum(w * t for w, t in terms) / sum(w for w, _ in terms)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_class_weights_given_as_a_callable_are_read_at_the_first_use_only():
    calls = []

    def weights():
        calls.append(1)
        return [0.0, 1.0, 3.0]

    loss = WeightedNLLLoss(class_weights=weights)
    assert calls == [] and loss.state_dict() == {}  # never part of a state dict
    probs = torch.full((1, 3, 2, 2), 1 / 3)
    labels = torch.tensor([[[1, 2], [2, 0]]])
    loss(probs, labels)
    loss(probs, labels)
    assert calls == [1]
    with pytest.raises(ValueError, match="3 entries but the model predicts 4"):
        loss(torch.full((1, 4, 2, 2), 0.25), labels)


def test_boundary_loss_is_zero_for_the_true_one_hot_map_and_grows_when_boundaries_move():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    one_hot = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    loss = BoundaryLoss()
    assert float(loss(one_hot, labels)) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(one_hot, shifts=2, dims=3)
    assert float(loss(shifted, labels)) > 0.5


def test_auxiliary_head_losses_weigh_each_heads_terms_and_name_them():
    g = torch.Generator().manual_seed(0)
    heads = [torch.softmax(torch.randn(1, 3, 4, 4, generator=g), dim=1) for _ in range(3)]
    labels = torch.randint(0, 3, (1, 4, 4), generator=g)
    terms = LossTerms({"nll": WeightedNLLLoss(), "lovasz": LovaszSoftmaxLoss()}, weights={"lovasz": 1.5})
    out = AuxiliaryHeadLosses(terms, aux_weight=0.5)(heads, labels)
    assert sorted(out) == sorted(
        ["loss_nll", "loss_lovasz", "loss_aux1_nll", "loss_aux1_lovasz", "loss_aux2_nll", "loss_aux2_lovasz"]
    )
    assert float(out["loss_lovasz"]) == pytest.approx(1.5 * float(lovasz_softmax(heads[0], labels)))
    assert float(out["loss_aux2_lovasz"]) == pytest.approx(0.5 * 1.5 * float(lovasz_softmax(heads[2], labels)))


def test_loss_terms_refuse_a_weight_for_a_term_they_do_not_have():
    with pytest.raises(ValueError, match="'boundary'"):
        LossTerms({"nll": WeightedNLLLoss()}, weights={"boundary": 1.0})
