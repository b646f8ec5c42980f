"""The seed's scalar chain: closed form against autograd, and the skip's "+ 1"."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reslab.analysis import chain_gradient_autograd, chain_gradient_closed_form, run_toy_chain, sweep_depths
from reslab.analysis.toy_chain import draw_weights
from reslab.errors import ConfigError

ACTIVATIONS = ("sigmoid", "tanh", "relu")
EXPERIMENT = Path(__file__).resolve().parents[1] / "conf" / "experiment" / "toy_chain.yaml"


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 5, 20])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("target", [None, 0.3])
def test_closed_form_matches_autograd(activation, depth, skip, target):
    weights = draw_weights(depth + 1, seed=depth)
    autograd = chain_gradient_autograd(weights, 0.8, activation, skip, target)
    closed = chain_gradient_closed_form(weights, 0.8, activation, skip, target)
    assert autograd != 0
    assert rel(autograd, closed) < 1e-6


def test_depth_one_relu_by_hand():
    # y1 = relu(w1 x), theta = relu(w2 y1) [+ w1 x]  ->  dtheta/dw1 = w2 x [+ x]
    w1, w2, x = 0.5, 0.7, 2.0
    for compute in (chain_gradient_autograd, chain_gradient_closed_form):
        assert compute([w1, w2], x, "relu", skip=False) == pytest.approx(w2 * x)
        assert compute([w1, w2], x, "relu", skip=True) == pytest.approx(w2 * x + x)
        # R = 0.5 (theta - t)^2 multiplies by g = theta - t
        theta = w2 * w1 * x
        assert compute([w1, w2], x, "relu", skip=False, target=1.0) == pytest.approx((theta - 1.0) * w2 * x)


def test_relu_at_zero_follows_autograd_convention():
    # w1 = 0 puts the first pre-activation exactly at 0, where relu' is taken as 0.
    weights = [0.0, 0.8, 0.6]
    assert chain_gradient_autograd(weights, 1.0, "relu", skip=False) == 0.0
    assert chain_gradient_closed_form(weights, 1.0, "relu", skip=False) == 0.0
    assert chain_gradient_closed_form(weights, 1.0, "relu", skip=True) == 1.0


def test_skip_keeps_the_first_gradient_at_depth_50():
    weights = draw_weights(51, seed=0)
    x = 1.5
    plain = chain_gradient_autograd(weights, x, "sigmoid", skip=False)
    with_skip = chain_gradient_autograd(weights, x, "sigmoid", skip=True)
    assert abs(plain) < 1e-20  # vanished: 50 factors of w f' <= 0.9 / 4
    assert abs(with_skip) >= 0.999 * abs(x)  # g x (... + 1) with g = 1
    # The skip adds exactly g x; a closed form without the "+ 1" misses it completely.
    assert with_skip - plain == pytest.approx(x, rel=1e-12)
    dropped_plus_one = chain_gradient_closed_form(weights, x, "sigmoid", skip=False)
    assert rel(with_skip, dropped_plus_one) > 0.99


def test_sweep_rows_pair_plain_and_skip_on_the_same_weights():
    rows = sweep_depths([1, 3], ["tanh"], seed=1)
    assert [(r["depth"], r["skip"]) for r in rows] == [(1, False), (1, True), (3, False), (3, True)]
    assert set(rows[0]) == {"depth", "activation", "skip", "autograd", "closed_form", "rel_error"}
    for plain, skip in zip(rows[::2], rows[1::2]):
        assert skip["autograd"] - plain["autograd"] == pytest.approx(1.0)  # R = theta, x = 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"activations": ["softplus"]},
        {"depths": [0, 3]},
        {"depths": []},
        {"weight_range": [0.9, 0.5]},
    ],
)
def test_bad_inputs_name_what_is_allowed(kwargs):
    args = {"depths": [1, 2], "activations": ["relu"], **kwargs}
    with pytest.raises(ConfigError):
        sweep_depths(**args)


def test_run_toy_chain_writes_csv_json_png(tmp_path):
    summary = run_toy_chain([1, 2, 10], ["sigmoid", "relu"], tmp_path, seed=0)
    assert summary["passed"] and summary["max_rel_error"] < 1e-6

    with (tmp_path / "toy_chain.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2 * 2
    assert json.loads((tmp_path / "toy_chain.json").read_text()) == summary
    assert (tmp_path / "toy_chain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    deepest = summary["deepest"]["sigmoid"]
    assert deepest["depth"] == 10 and abs(deepest["plain"]) < 1e-4 < abs(deepest["skip"])


def test_experiment_config_keys_are_run_toy_chain_arguments(tmp_path):
    cfg = OmegaConf.load(EXPERIMENT)
    assert cfg.task == "toy_chain"
    node = OmegaConf.merge({"seed": 7}, cfg).toy_chain
    kwargs = OmegaConf.to_container(node, resolve=True)
    assert kwargs["depths"] == list(range(1, 51)) and kwargs["seed"] == 7
    summary = run_toy_chain(out_dir=tmp_path, **kwargs)
    assert summary["passed"]
