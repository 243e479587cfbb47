"""rnndrop.uncertainty: calibration, scoring rules, MC-dropout uncertainties, AUROC, regression."""
import math

import pytest
import torch

from rnndrop.uncertainty import (accuracy, auroc, brier_score, classification_metrics,
                                 expected_calibration_error, macro_f1, mutual_information, nll,
                                 plot_reliability, predictive_entropy, regression_metrics,
                                 reliability_bins)

EDGES = torch.linspace(0, 1, 16)         # the float32 bin edges for n_bins = 15


def _rows(confs, n_classes):
    """Rows with top-label probability ``c`` on class 0 and the rest spread evenly."""
    p = torch.empty(len(confs), n_classes)
    for i, c in enumerate(confs):
        c = float(c)
        p[i] = (1 - c) / (n_classes - 1)
        p[i, 0] = c
    return p


def _calibrated_sample(n, n_classes, shift, gen):
    """Predictions with top-label confidence c ~ U(0.5, 1) on a random class, whose label is
    the predicted class with probability c - shift (else another class at random)."""
    c = 0.5 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    rest = torch.distributions.Dirichlet(torch.ones(n_classes - 1, dtype=torch.float64)) \
        .sample((n,)) * (1 - c)[:, None]                      # each < 0.5 <= c: c stays on top
    top = torch.randint(n_classes, (n,), generator=gen)
    probs = torch.empty(n, n_classes, dtype=torch.float64)
    for i in range(n_classes):                                # top class i; the rest around it
        m = top == i
        probs[m] = torch.cat([rest[m, :i], c[m, None], rest[m, i:]], dim=1)
    hit = torch.rand(n, generator=gen, dtype=torch.float64) < c - shift
    other = (top + torch.randint(1, n_classes, (n,), generator=gen)) % n_classes
    return probs, torch.where(hit, top, other)


# ------------------------------------------------------------------------------------ ECE

def test_ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_is_the_gap():
    gen = torch.Generator().manual_seed(0)
    probs, y = _calibrated_sample(100_000, 4, 0.0, gen)
    assert expected_calibration_error(probs, y) < 0.01
    # labels right 10 points less often than claimed: every bin is off by 0.1
    probs, y = _calibrated_sample(100_000, 4, 0.1, gen)
    assert expected_calibration_error(probs, y) == pytest.approx(0.1, abs=0.01)
    # and float32 gives the same
    assert expected_calibration_error(probs.float(), y) == pytest.approx(
        expected_calibration_error(probs, y), abs=1e-5)


def test_ece_exactly_calibrated_small_case_is_exactly_zero():
    # 4 at confidence 0.75 with 3 right (bin [11/15, 12/15)); 2 at 0.5 with 1 right (bin 7)
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.5, 0.5]] * 2)
    y = torch.tensor([0, 0, 0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == 0.0


def test_ece_of_a_miscalibrated_predictor_by_hand():
    probs = _rows([0.9, 0.9, 0.55, 0.7], 2)
    y = torch.tensor([0, 1, 0, 1])                      # right, wrong, right, wrong
    # bin 13 [13/15, 14/15): {0.9 right, 0.9 wrong}: |0.5 - 0.9|  * 2/4 = 0.2
    # bin  8 [ 8/15,  9/15): {0.55 right}:           |1 - 0.55|   * 1/4 = 0.1125
    # bin 10 [10/15, 11/15): {0.7 wrong}:            |0 - 0.7|    * 1/4 = 0.175
    assert expected_calibration_error(probs, y) == pytest.approx(0.4875, abs=1e-6)
    # 1 bin: the gap between mean accuracy and mean confidence, |0.5 - 0.7625|
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(0.2625, abs=1e-6)


# Reference values from torchmetrics 1.9.0 (torch 2.13.0+cpu),
# CalibrationError(task="multiclass", num_classes=C, n_bins=15, norm="l1"), on these float32 inputs.
TORCHMETRICS_CASES = {
    # confidences exactly on the edges 6/15, 9/15, 12/15 (the float32 linspace values) and inside
    # the bins above them: bins are closed on the left, [e_b, e_{b+1})
    "edges": (lambda: (_rows([EDGES[6], 0.45, EDGES[9], 0.65, EDGES[12]], 4),
                       torch.tensor([0, 1, 2, 0, 0])), 0.11999999731779099),
    # 1/15 (uniform over 15 classes, argmax the first) lies in bin 1 with 0.1; 2/15 in bin 2
    "one_fifteenth": (lambda: (torch.cat([torch.full((2, 15), 1 / 15), _rows([0.1, EDGES[2]], 15)]),
                               torch.tensor([0, 4, 0, 1])), 0.4749999940395355),
    # confidences exactly 1.0, nothing else in the last bin
    "one_alone": (lambda: (_rows([1.0, 1.0, 0.5, 0.8], 3), torch.tensor([0, 1, 0, 1])),
                  0.574999988079071),
    "rows": (lambda: (torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.34, 0.33, 0.33],
                                    [0.05, 0.05, 0.9], [0.6, 0.4, 0.0], [0.2, 0.2, 0.6],
                                    [0.45, 0.1, 0.45], [0.0, 0.0, 1.0]]),
                      torch.tensor([0, 2, 1, 2, 1, 2, 2, 2])), 0.2862499952316284),
}


@pytest.mark.parametrize("case", sorted(TORCHMETRICS_CASES))
def test_ece_equals_torchmetrics(case):
    make, reference = TORCHMETRICS_CASES[case]
    probs, y = make()
    assert expected_calibration_error(probs, y) == pytest.approx(reference, abs=1e-6)
    if case != "edges":
        # float64 has float64 edges: the float32 edge values of "edges" lie just off them
        assert expected_calibration_error(probs.double(), y) == pytest.approx(reference, abs=1e-6)


def test_ece_confidence_one_goes_into_the_last_bin():
    # Deliberate difference from torchmetrics 1.9.0, which counts a confidence of exactly 1.0 in
    # a hidden 16th bin of its own (bucketize(right=True) - 1 == n_bins; torchmetrics issue
    # #3510) and gives 0.26999998092651367 here: bins {0.95, 0.97} (acc 1, conf 0.96) -> 0.02
    # plus {1.0, 1.0} (acc 0.5) -> 0.25.
    # Ours, the textbook last bin [14/15, 1]: {1, 1, 0.95, 0.97}, 3 of 4 right, mean confidence
    # 0.98: |0.75 - 0.98| = 0.23.
    probs, y = _rows([1.0, 1.0, 0.95, 0.97], 3), torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, y) == pytest.approx(0.23, abs=1e-6)
    bins = reliability_bins(probs, y)
    assert bins["count"].tolist() == [0] * 14 + [4]


def test_reliability_bins():
    probs = _rows([0.9, 0.9, 0.55, 0.7, 1.0], 2)
    y = torch.tensor([0, 1, 0, 1, 0])
    bins = reliability_bins(probs, y, n_bins=5)        # edges 0, .2, .4, .6, .8, 1
    assert bins["edges"].shape == (6,) and bins["edges"].dtype == torch.float32
    assert bins["count"].tolist() == [0, 0, 1, 1, 3]
    assert torch.isnan(bins["confidence"][:2]).all() and torch.isnan(bins["accuracy"][:2]).all()
    assert bins["confidence"][2:].tolist() == pytest.approx([0.55, 0.7, 2.8 / 3], abs=1e-6)
    assert bins["accuracy"][2:].tolist() == pytest.approx([1.0, 0.0, 2 / 3], abs=1e-6)
    # the ECE is the count-weighted gap of these bins
    full = bins["count"] > 0
    by_hand = float((bins["count"][full] * (bins["accuracy"] - bins["confidence"])[full].abs())
                    .sum() / 5)
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx(by_hand, abs=1e-6)


# ------------------------------------------------------------------ scoring rules, accuracy, F1

def test_brier_nll_accuracy_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    # (0.3² + 0.2² + 0.1²) = 0.14 and (0.3² + 0.7² + 0.4²) = 0.74
    assert brier_score(probs, y) == pytest.approx(0.44, abs=1e-12)
    assert nll(probs, y) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2, abs=1e-12)
    assert accuracy(probs, y) == 0.5                    # argmax 0 right, argmax 2 wrong
    for f in (brier_score, nll, accuracy):
        assert isinstance(f(probs.float(), y), float)
    # a zero probability on the target: clamped at eps, finite
    assert nll(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == pytest.approx(-math.log(1e-12))


def test_brier_two_classes_is_twice_the_binary_one():
    gen = torch.Generator().manual_seed(1)
    p1 = torch.rand(50, generator=gen, dtype=torch.float64)
    y = torch.randint(2, (50,), generator=gen)
    probs = torch.stack([1 - p1, p1], dim=1)
    assert brier_score(probs, y) == pytest.approx(2 * float(((p1 - y) ** 2).mean()), abs=1e-12)


def test_macro_f1_by_hand():
    pred = torch.tensor([0, 0, 1, 1, 2])
    y = torch.tensor([0, 1, 1, 1, 0])
    # class 0: TP 1 FP 1 FN 1 -> 2/4; class 1: TP 2 FP 0 FN 1 -> 4/5; class 2 predicted, never a
    # target -> 0; class 3 neither -> left out
    assert macro_f1(pred, y, num_classes=4) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # class 2 a target but never predicted: F1 0, counted
    assert macro_f1(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])) == pytest.approx(
        (1 + 2 / 3 + 0) / 3)
    # probabilities: their argmax
    probs = torch.nn.functional.one_hot(pred, 4).double() * 0.7 + 0.075
    assert macro_f1(probs, y) == pytest.approx(macro_f1(pred, y, num_classes=4))
    assert macro_f1(y, y) == 1.0


def test_macro_f1_against_a_per_class_count():
    gen = torch.Generator().manual_seed(2)
    n_classes = 6
    pred = torch.randint(n_classes - 1, (200,), generator=gen)      # class 5 never predicted
    y = torch.randint(n_classes, (200,), generator=gen)
    f1s = []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    assert f1s[5] == 0.0
    assert macro_f1(pred, y, num_classes=n_classes) == pytest.approx(sum(f1s) / n_classes)


def test_classification_metrics():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    y = torch.tensor([0, 1])
    m = classification_metrics(probs, y)
    assert set(m) == {"accuracy", "macro_f1", "nll", "brier", "ece"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["brier"] == pytest.approx(brier_score(probs, y))
    assert m["ece"] == pytest.approx(expected_calibration_error(probs, y))
    assert m["macro_f1"] == pytest.approx(1 / 3)        # class 0: 1; class 1: 0; class 2: 0


# --------------------------------------------------------------------------- uncertainties

def test_predictive_entropy():
    for n_classes in (2, 5):
        h = predictive_entropy(torch.full((3, n_classes), 1 / n_classes, dtype=torch.float64))
        assert h.tolist() == pytest.approx([math.log(n_classes)] * 3, abs=1e-12)
    h = predictive_entropy(torch.eye(4))
    assert h.shape == (4,) and h.eq(0).all()            # 0 log 0 = 0, no nan
    p = torch.tensor([[0.5, 0.25, 0.25]])
    assert float(predictive_entropy(p)) == pytest.approx(1.5 * math.log(2))


def test_mutual_information():
    gen = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(1, 7, 4, generator=gen), -1)
    assert mutual_information(p.expand(5, 7, 4)).tolist() == pytest.approx([0.0] * 7, abs=1e-6)
    # 3 identical float32 passes: the mean of 3 copies rounds, and H[mean] - mean H comes out
    # -1e-7 for some rows before the clamp
    same = torch.softmax(torch.randn(1, 1000, 4, generator=gen), -1).expand(3, 1000, 4)
    mi = mutual_information(same)
    assert mi.min() == 0 and mi.max() < 1e-6
    # two confident passes that disagree: the mean is uniform, each pass has entropy 0
    mi = mutual_information(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64))
    assert float(mi) == pytest.approx(math.log(2))
    samples = torch.softmax(3 * torch.randn(20, 100, 5, generator=gen), -1)
    mi = mutual_information(samples)
    assert mi.shape == (100,) and (mi >= 0).all() and (mi > 0).any()
    # BALD never exceeds the predictive entropy
    assert (mi <= predictive_entropy(samples.mean(0)) + 1e-6).all()


# ---------------------------------------------------------------------------------- AUROC

def test_auroc_extremes():
    pos = torch.tensor([False, False, True, True])
    assert auroc(torch.tensor([0.1, 0.2, 0.8, 0.9]), pos) == 1.0
    assert auroc(torch.tensor([0.9, 0.8, 0.2, 0.1]), pos) == 0.0
    assert auroc(torch.full((4,), 0.3), pos) == 0.5
    assert auroc(torch.tensor([0.1, 0.5, 0.5, 0.9]), pos) == pytest.approx(7 / 8)  # one tie pair
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([True, True])))
    assert math.isnan(auroc(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


def test_auroc_against_a_pairwise_count():
    gen = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.float64):
        scores = torch.randint(6, (300,), generator=gen).to(dtype)     # many ties
        pos = torch.rand(300, generator=gen) < 0.3
        sp, sn = scores[pos][:, None], scores[~pos][None, :]
        brute = float(((sp > sn).double() + 0.5 * (sp == sn).double()).mean())
        assert auroc(scores, pos) == pytest.approx(brute, abs=1e-12)


# ------------------------------------------------------------------------------ regression

def test_regression_metrics():
    mean = torch.tensor([1.0, 2.0, 3.0])
    y = torch.tensor([1.0, 4.0, 0.0])                   # errors 0, 2, -3
    m = regression_metrics(mean, y)
    assert set(m) == {"rmse", "mae"}
    assert m["rmse"] == pytest.approx(math.sqrt(13 / 3))
    assert m["mae"] == pytest.approx(5 / 3)
    std = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    m = regression_metrics(mean.double(), y.double(), std)
    ref = -torch.distributions.Normal(mean.double(), std).log_prob(y.double()).mean()
    assert m["nll"] == pytest.approx(float(ref), abs=1e-12)
    # a homoscedastic spread as a 0-d tensor
    m = regression_metrics(mean, y, torch.tensor(1.5))
    ref = -torch.distributions.Normal(mean, 1.5).log_prob(y).mean()
    assert m["nll"] == pytest.approx(float(ref), abs=1e-5)
    # zero spread: var clamped at 1e-12, finite
    assert math.isfinite(regression_metrics(mean, y, torch.zeros(3))["nll"])


# ------------------------------------------------------------------------------------ plot

def test_plot_reliability(tmp_path):
    gen = torch.Generator().manual_seed(5)
    probs, y = _calibrated_sample(500, 3, 0.0, gen)
    over, y2 = _calibrated_sample(500, 3, 0.2, gen)
    path = plot_reliability({"standard": (over, y2), "MC dropout (50)": (probs.float(), y)},
                            tmp_path / "sub" / "reliability.png", title="test")
    assert path == tmp_path / "sub" / "reliability.png"
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call,match", [
    (lambda: expected_calibration_error(torch.tensor([0.5, 0.5]), torch.tensor([0])), "shape"),
    (lambda: expected_calibration_error(torch.full((2, 2), 0.5), torch.tensor([0])), "shape"),
    (lambda: expected_calibration_error(torch.tensor([[0.6, 0.6]]), torch.tensor([0])),
     "sum to 1"),
    (lambda: brier_score(torch.tensor([[2.0, -1.0]]), torch.tensor([0])), "negative"),
    (lambda: nll(torch.tensor([[0.5, 0.5]]), torch.tensor([2])), "class indices"),
    (lambda: accuracy(torch.tensor([[0.5, 0.5]]), torch.tensor([0.0])), "integer"),
    (lambda: expected_calibration_error(torch.full((2, 2), 0.5), torch.tensor([0, 1]), n_bins=0),
     "n_bins"),
    (lambda: expected_calibration_error(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
     "empty"),
    (lambda: macro_f1(torch.tensor([0, 1]), torch.tensor([0, 1, 1])), "shape"),
    (lambda: predictive_entropy(torch.tensor([[0.2, 0.2]])), "sum to 1"),
    (lambda: mutual_information(torch.full((4, 2), 0.5)), r"\(S, N, C\)"),
    (lambda: regression_metrics(torch.zeros(3), torch.zeros(4)), "same shape"),
    (lambda: regression_metrics(torch.zeros(3), torch.zeros(3), torch.ones(2)), "does not fit"),
    (lambda: regression_metrics(torch.zeros(0), torch.zeros(0)), "empty"),
    (lambda: auroc(torch.zeros(3), torch.tensor([True, False])), "shape"),
    (lambda: auroc(torch.zeros(0), torch.zeros(0, dtype=torch.bool)), "empty"),
    (lambda: plot_reliability({}, "x.png"), "non-empty"),
])
def test_errors_are_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
