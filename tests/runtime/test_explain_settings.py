"""Explanation settings, request parameters, targets and work splitting: pure functions, plain dicts."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients
from isvc_runtime.config import RuntimeConfig, build_config, model_settings
from isvc_runtime.errors import ConfigError, InputError
from isvc_runtime.explain.attribution import attribute
from isvc_runtime.explain.service import CAPTUM, HANDLE, INSIGHTS, explain_threads, strategy, torch_threads
from isvc_runtime.explain.settings import (
    DEFAULT_N_STEPS,
    INPUT_ELEMENTS_PER_PASS,
    ExplainOptions,
    ExplainSettings,
    check_work,
    choose,
    explain_settings,
    passes,
    request_targets,
)
from isvc_runtime.handlers.base import BaseHandler
from isvc_runtime.handlers.image_classifier import ImageClassifier


def test_defaults_match_torchserves_vision_handler() -> None:
    settings = explain_settings("mnist")
    assert settings.defaults == ExplainOptions(n_steps=15, method="gausslegendre", internal_batch_size=None)
    assert DEFAULT_N_STEPS == 15
    assert settings.baseline == 0.0 and settings.layer is None


def test_config_properties_explain_wins_key_by_key_over_the_archives_config_file() -> None:
    settings = explain_settings(
        "m",
        {"n_steps": 30, "method": "riemann_trapezoid", "layer": "embedding"},
        {"n_steps": 40, "max_n_steps": 50},
    )
    assert settings.defaults.n_steps == 40
    assert settings.defaults.method == "riemann_trapezoid"
    assert settings.layer == "embedding"
    assert settings.max_n_steps == 50


def test_model_settings_carry_explain_from_the_models_json_and_the_archive() -> None:
    config = build_config(
        {"models": '{"mnist": {"1.0": {"batchSize": 4, "explain": {"n_steps": 25, "max_n_steps": 60}}}}'}
    )
    settings = model_settings("mnist", config, archive_defaults={"explain": {"baseline": -0.5}})
    assert settings.batch_size == 4
    assert settings.explain.defaults.n_steps == 25
    assert settings.explain.max_n_steps == 60
    assert settings.explain.baseline == -0.5
    assert model_settings("other", RuntimeConfig()).explain == ExplainSettings()


@pytest.mark.parametrize(
    ("archive", "configured", "named"),
    [
        (None, {"n_step": 10}, "unknown keys ['n_step']"),
        (None, {"n_steps": "many"}, "n_steps"),
        (None, {"n_steps": 2000}, "n_steps"),  # a default above the (default) bound
        ({"max_n_steps": 0}, None, "max_n_steps"),
        (None, {"method": "simpson"}, "method"),
        (None, {"layer": ""}, "layer"),
        (None, {"baseline": "zero"}, "baseline"),
        (None, {"threads": 0}, "threads"),
        ("fast", None, "must be an object"),
    ],
)
def test_malformed_explain_settings_stop_startup_naming_the_key(archive, configured, named) -> None:
    with pytest.raises(ConfigError, match="model 'mnist'") as error:
        explain_settings("mnist", archive, configured)
    assert named in str(error.value)


def test_request_parameters_choose_within_the_models_bounds() -> None:
    settings = explain_settings("m", None, {"max_n_steps": 100, "max_internal_batch_size": 64})
    options = choose(settings, {"n_steps": 100, "method": "riemann_left", "internal_batch_size": 64})
    assert options == ExplainOptions(n_steps=100, method="riemann_left", internal_batch_size=64)
    assert choose(settings, None) == settings.defaults
    assert choose(settings, {"target": 3}) == settings.defaults  # other readers' keys are left alone


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"n_steps": 101}, "n_steps must be an integer from 1 to 100"),
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": "15"}, "n_steps"),
        ({"n_steps": True}, "n_steps"),
        ({"method": "simpson"}, "method must be one of"),
        ({"internal_batch_size": 0}, "internal_batch_size"),
        ({"internal_batch_size": 65}, "internal_batch_size must be an integer from 1 to 64"),
        ("fast", '"parameters" must be an object'),
        ([1], '"parameters" must be an object'),
        ({"method": "riemann_trapezoid", "n_steps": 1}, "at least 2 with method 'riemann_trapezoid'"),
        ({"method": "riemann_left", "n_steps": 1}, "at least 2 with method 'riemann_left'"),
    ],
)
def test_out_of_bounds_or_malformed_parameters_are_400s(parameters, message) -> None:
    settings = explain_settings("m", None, {"max_n_steps": 100, "max_internal_batch_size": 64})
    with pytest.raises(InputError, match=message) as error:
        choose(settings, parameters)
    assert error.value.status == 400


def test_total_steps_of_a_request_are_bounded() -> None:
    settings = explain_settings("m", None, {"max_total_steps": 1000})
    check_work(settings, ExplainOptions(n_steps=100), 10)
    with pytest.raises(InputError, match="over this model's limit of 1000"):
        check_work(settings, ExplainOptions(n_steps=100), 11)


def test_each_instance_gets_its_own_target_else_the_shared_one_else_the_prediction() -> None:
    rows = [{"data": "a", "target": 3}, {"data": "b"}, {"data": "c", "target": 0}]
    assert request_targets(rows, None) == [3, None, 0]
    assert request_targets(rows, {"target": 7}) == [3, 7, 0]
    assert request_targets(rows, {"target": [1, 2, 4]}) == [3, 2, 0]
    assert request_targets([{"data": "a"}], {"target": None}) == [None]


@pytest.mark.parametrize(
    ("rows", "parameters", "message"),
    [
        ([{"data": "a", "target": -1}], None, "instance 0: target must be a non-negative integer"),
        ([{"data": "a", "target": "two"}], None, "target"),
        ([{"data": "a", "target": 1.5}], None, "target"),
        ([{"data": "a"}, {"data": "b"}], {"target": [1]}, "1 entries for 2 instances"),
        ([{"data": "a"}], {"target": True}, "target"),
    ],
)
def test_malformed_targets_are_400s(rows, parameters, message) -> None:
    with pytest.raises(InputError, match=message):
        request_targets(rows, parameters)


@pytest.mark.parametrize(
    ("options", "instances", "elements"),
    [
        (ExplainOptions(n_steps=15), 1, 784),
        (ExplainOptions(n_steps=15), 100, 784),
        (ExplainOptions(n_steps=1000), 8, 784),
        (ExplainOptions(n_steps=1000), 3, 3 * 224 * 224),
        (ExplainOptions(n_steps=200, internal_batch_size=64), 20, 784),
        (ExplainOptions(n_steps=10, internal_batch_size=64), 20, 784),
        (ExplainOptions(n_steps=1, internal_batch_size=1), 5, 10),
    ],
)
def test_every_forward_pass_holds_a_bounded_number_of_scaled_inputs(options, instances, elements) -> None:
    per_call, internal = passes(options, instances, elements)
    assert 1 <= per_call <= instances
    rows_per_pass = per_call * options.n_steps if internal is None else internal
    bound = options.internal_batch_size or max(1, INPUT_ELEMENTS_PER_PASS // elements)
    assert rows_per_pass <= bound


def test_split_passes_give_captums_numbers_for_each_instance() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).eval()
    inputs = torch.randn(7, 6)
    targets = [0, 1, 2, 2, 1, 0, 1]
    options = ExplainOptions(n_steps=50, internal_batch_size=16)  # 16 < 50 steps: chunked per instance
    ours = attribute(model, inputs, targets, options)
    direct = IntegratedGradients(model).attribute(inputs, target=targets, n_steps=50)
    assert ours.shape == inputs.shape
    assert torch.allclose(ours, direct, atol=1e-6)


def test_integer_inputs_without_a_layer_are_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(5, 2), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(InputError, match="token ids"):
        attribute(model, torch.tensor([[1, 2]]), [0], ExplainOptions())


class _Own(ImageClassifier):
    def explain_handle(self, data_preprocess, raw_data):
        return []


class _Insights(ImageClassifier):
    def get_insights(self, tensor_data, data, target=0):
        return []


def test_the_handlers_own_explanation_wins_over_captum() -> None:
    assert strategy(_Own()) == HANDLE
    assert strategy(_Insights()) == INSIGHTS
    plain = ImageClassifier()
    assert strategy(plain) is None  # no model loaded yet
    plain.model = torch.nn.Linear(2, 2)
    assert strategy(plain) == CAPTUM
    assert strategy(BaseHandler()) is None


def test_explanations_use_every_cpu_only_while_the_model_is_otherwise_idle_at_default_threads() -> None:
    # the server's default on 2 CPUs is 1 thread (one core left to the event loop)
    assert explain_threads(1, 2, workers=1, idle=True, pinned=False) == 2
    assert explain_threads(1, 2, workers=1, idle=False, pinned=False) == 1  # predictions queued
    assert explain_threads(1, 2, workers=2, idle=True, pinned=False) == 1  # another worker may run
    assert explain_threads(1, 2, workers=1, idle=True, pinned=True) == 1  # OMP_NUM_THREADS set
    assert explain_threads(3, 8, workers=1, idle=True, pinned=False) == 3  # --torch-threads 3: kept
    assert explain_threads(7, 8, workers=1, idle=True, pinned=False) == 8
    assert explain_threads(1, 2, workers=1, idle=True, pinned=False, configured=1) == 1
    assert explain_threads(1, 8, workers=2, idle=False, pinned=True, configured=4) == 4


def test_explain_threads_setting_is_read_from_the_models_explain_object() -> None:
    assert explain_settings("mnist", None, {"threads": 1}).threads == 1
    assert explain_settings("mnist", None, None).threads is None


def test_torch_threads_restores_the_calling_threads_count_even_after_an_error() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), torch_threads(other):
        assert torch.get_num_threads() == other
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
