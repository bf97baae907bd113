"""Batched accuracy, AUC and precision/recall against scikit-learn and hand counts."""

from __future__ import annotations

import math

import torch
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from bibench.data import metrics


def test_auc_matches_sklearn_per_run_including_ties():
    gen = torch.Generator().manual_seed(0)
    positive = torch.rand(300, generator=gen) < 0.6
    scores = torch.randint(0, 20, (4, 300), generator=gen).double()  # many ties
    got = metrics.auc(scores, positive)
    for r in range(4):
        ref = roc_auc_score(positive.numpy(), scores[r].numpy())
        assert abs(got[r].item() - ref) < 1e-12


def test_auc_limits():
    positive = torch.tensor([True, True, False, False, False])
    ordered = torch.tensor([[5.0, 4.0, 1.0, 2.0, 3.0]])
    assert metrics.auc(ordered, positive).item() == 1.0
    assert metrics.auc(-ordered, positive).item() == 0.0
    assert metrics.auc(torch.zeros(1, 5), positive).item() == 0.5  # all tied
    assert math.isnan(metrics.auc(ordered, torch.ones(5, dtype=torch.bool)).item())


def test_precision_recall_match_sklearn():
    gen = torch.Generator().manual_seed(1)
    truth = torch.rand(200, generator=gen) < 0.3
    flagged = torch.rand(3, 200, generator=gen) < 0.4
    p, r = metrics.precision_recall(flagged, truth)
    for i in range(3):
        assert abs(p[i].item() - precision_score(truth.numpy(), flagged[i].numpy())) < 1e-12
        assert abs(r[i].item() - recall_score(truth.numpy(), flagged[i].numpy())) < 1e-12
    p0, _ = metrics.precision_recall(torch.zeros(1, 200, dtype=torch.bool), truth)
    assert math.isnan(p0.item())  # nothing flagged: precision undefined, not 0 or 1


def test_accuracy_is_the_fraction_correct():
    pred = torch.tensor([[0, 1, 2, 2], [1, 1, 1, 1]])
    labels = torch.tensor([0, 1, 2, 0])
    assert metrics.accuracy(pred, labels).tolist() == [0.75, 0.25]


def test_per_run_classes_of_stacked_instances_match_sklearn_run_by_run():
    gen = torch.Generator().manual_seed(1)
    truth = torch.rand(3, 200, generator=gen) < torch.tensor([[0.2], [0.5], [0.7]])
    scores = torch.randint(0, 20, (3, 200), generator=gen).double()
    flagged = scores < 8
    got_auc = metrics.auc(scores, truth)
    precision, recall = metrics.precision_recall(flagged, truth)
    for r in range(3):
        assert abs(got_auc[r].item() - roc_auc_score(truth[r].numpy(), scores[r].numpy())) < 1e-12
        ref_p = precision_score(truth[r].numpy(), flagged[r].numpy())
        assert abs(precision[r].item() - ref_p) < 1e-12
        assert abs(recall[r].item() - recall_score(truth[r].numpy(), flagged[r].numpy())) < 1e-12
    empty = torch.zeros(2, 5, dtype=torch.bool)
    empty[1, 0] = True  # run 1 has one corrupted example, run 0 none: recall NaN for run 0
    _, recall = metrics.precision_recall(torch.ones(2, 5, dtype=torch.bool), empty)
    assert math.isnan(recall[0].item()) and recall[1].item() == 1.0
