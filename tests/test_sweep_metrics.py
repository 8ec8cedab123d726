"""codesign.sweep.metrics: the flat metric namespace, constraints and Pareto fronts."""

from __future__ import annotations

import itertools
import random

import pytest

from codesign.sweep.metrics import (
    accuracy_metrics,
    check_metric_name,
    dominates,
    metrics_from_report,
    pareto_mask,
    parse_constraint,
)
from hw.errors import InputError


def test_metrics_from_report_flattens_resources_energy_and_accuracy():
    report = {"latency_ms": 2.0, "latency_cycles": 600, "energy_mj": 1.5, "throughput_per_s": None,
              "resources": {"dsp": {"used": 10.0, "available": 100.0, "fraction": 0.1}},
              "energy_breakdown_mj": {"mac": 1.0, "static": 0.5},
              "accuracy": {"reference": "onnxruntime FP32", "samples": 2, "layers": [], "outputs": {
                  "logits": {"cosine_mean": 0.999, "cosine_min": 0.99, "max_abs_error": 0.5, "max_abs_value": 3.0,
                             "top1_agreement": 1.0},
                  "hidden": {"cosine_mean": 0.5, "cosine_min": 0.1, "max_abs_error": 9.0, "max_abs_value": 3.0}}}}
    assert metrics_from_report(report) == {
        "latency_ms": 2.0, "latency_cycles": 600.0, "energy_mj": 1.5, "dsp": 10.0, "dsp_fraction": 0.1,
        "energy.mac": 1.0, "energy.static": 0.5, "accuracy.cosine": 0.999, "accuracy.cosine_min": 0.99,
        "accuracy.max_abs_err": 0.5, "accuracy.top1": 1.0}


def test_accuracy_cosine_counts_real_tokens_only_when_there_is_a_mask():
    row = {"cosine_mean": 0.9, "cosine_mean_valid": 0.95, "cosine_min": 0.2, "max_abs_error": 1.0,
           "max_abs_value": 2.0}
    assert accuracy_metrics({"outputs": {"last_hidden_state": row}}) == {
        "accuracy.cosine": 0.95, "accuracy.cosine_min": 0.2, "accuracy.max_abs_err": 1.0}
    assert accuracy_metrics({"outputs": {}}) == {}


def test_metric_names():
    for name in ("latency_ms", "dsp", "uram_fraction", "accuracy.cosine", "accuracy.top1", "energy.static"):
        assert check_metric_name(name) == name
    with pytest.raises(InputError, match="'speed' is not a report field"):
        check_metric_name("speed")
    with pytest.raises(InputError, match=r"'accuracy.cosin' is not a report field \(known: .*accuracy.cosine, "
                                         r"accuracy.cosine_min, accuracy.max_abs_err, accuracy.top1\)$"):
        check_metric_name("accuracy.cosin")


def test_constraints():
    c = parse_constraint("accuracy.cosine >= 0.99")
    assert c.violation({"accuracy.cosine": 0.995}, True, 0.0) == (0.0, None)
    violation, reason = c.violation({"accuracy.cosine": 0.98}, True, 0.0)
    assert violation == pytest.approx(0.01 / 0.99) and reason == "accuracy.cosine = 0.98, needs >= 0.99"
    assert c.violation({}, True, 0.0) == (1.0, "accuracy.cosine not reported")
    fits = parse_constraint("fits")
    assert fits.violation({}, False, 0.25) == (0.25, "does not fit")
    with pytest.raises(InputError, match="expected 'fits' or '<metric> <op> <number>'"):
        parse_constraint("latency_ms is small")


def _brute(points, directions):
    signs = [1 if d == "min" else -1 for d in directions]
    return [not any(dominates(q, p, signs) for q in points) for p in points]


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_matches_brute_force(seed):
    rng = random.Random(seed)
    for dims in (1, 2, 3):
        points = [[rng.randint(0, 6) for _ in range(dims)] for _ in range(60)]
        for directions in itertools.product(("min", "max"), repeat=dims):
            assert pareto_mask(points, directions) == _brute(points, directions)
