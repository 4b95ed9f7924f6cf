"""`logger` and `batcher` (KFServing's) reach the runtime as flags, their unset fields the ConfigMap's."""

from __future__ import annotations

import json

import pytest
from isvc_operator.config import DEFAULTS, BatcherConfig, LoggerConfig, default_config, parse_config
from isvc_operator.errors import RenderError
from isvc_operator.render import render_knative_service
from isvc_operator.spec import BatcherSpec, LoggerSpec, parse_inference_service


def runtime_container(ksvc: dict) -> dict:
    [container] = ksvc["spec"]["template"]["spec"]["containers"]
    return container


def flags(args: list[str]) -> dict[str, str]:
    """`--name value` pairs after the model store, name and port (a repeated flag: the last wins)."""
    return dict(zip(args[0::2], args[1::2], strict=True))


def config_with(**sections: dict) -> object:
    data = {key: json.dumps(value) for key, value in DEFAULTS.items()}
    return parse_config(data | {key: json.dumps(value) for key, value in sections.items()})


def test_without_logger_or_batcher_the_runtime_gets_no_such_flags(torchserve) -> None:
    container = runtime_container(render_knative_service(torchserve, default_config()))
    assert not [arg for arg in container["args"] if arg.startswith(("--logger", "--batch", "--max-batch"))]
    assert {item["name"] for item in container["env"]} == {"PROTOCOL_VERSION"}


def test_batcher_fields_become_batch_size_delay_and_response_timeout(isvc_factory) -> None:
    isvc = isvc_factory(batcher={"maxBatchSize": 8, "maxLatency": 20, "timeout": 5})
    args = flags(runtime_container(render_knative_service(isvc, default_config()))["args"])
    assert (args["--batch-size"], args["--max-batch-delay"], args["--response-timeout"]) == ("8", "20", "5")


def test_an_empty_batcher_turns_batching_on_with_the_configmaps_values(isvc_factory) -> None:
    config = config_with(batcher={"maxBatchSize": 16, "maxLatency": 50, "timeout": 30})
    args = flags(runtime_container(render_knative_service(isvc_factory(batcher={}), config))["args"])
    assert (args["--batch-size"], args["--max-batch-delay"], args["--response-timeout"]) == ("16", "50", "30")


def test_batcher_defaults_are_kfservings_size_and_timeout_with_a_short_wait() -> None:
    assert BatcherSpec().with_defaults(default_config().batcher) == BatcherSpec(32, 100, 60)
    assert BatcherSpec(max_latency_ms=7).with_defaults(BatcherConfig()) == BatcherSpec(32, 7, 60)


def test_logger_url_and_mode_become_flags_and_the_isvc_identity_env(isvc_factory) -> None:
    isvc = isvc_factory(logger={"url": "http://sink.ns:8080/events", "mode": "request"})
    container = runtime_container(render_knative_service(isvc, default_config()))
    args = flags(container["args"])
    assert (args["--logger-url"], args["--logger-mode"]) == ("http://sink.ns:8080/events", "request")
    assert "--logger-ca-bundle" not in args
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert (env["ISVC_NAME"], env["ISVC_NAMESPACE"]) == ("torchserve", "kfserving-test")


def test_logger_defaults_to_all_to_the_configmaps_sink_kfservings_default_broker(isvc_factory) -> None:
    assert default_config().logger.default_url == "http://default-broker"
    args = flags(runtime_container(render_knative_service(isvc_factory(logger={}), default_config()))["args"])
    assert (args["--logger-url"], args["--logger-mode"]) == ("http://default-broker", "all")
    config = config_with(logger={"defaultUrl": "https://audit.example/in"})
    assert LoggerSpec().with_defaults(config.logger) == LoggerSpec("https://audit.example/in", "all")


def test_an_https_sink_is_verified_with_the_configmaps_ca_bundle_mounted_read_only(isvc_factory) -> None:
    config = config_with(logger={"defaultUrl": "http://default-broker", "caBundle": "sink-ca",
                                 "caCertFile": "service-ca.crt"})
    ksvc = render_knative_service(isvc_factory(logger={"url": "https://sink.ns/"}), config)
    pod = ksvc["spec"]["template"]["spec"]
    container = runtime_container(ksvc)
    assert flags(container["args"])["--logger-ca-bundle"] == "/etc/isvc-logger/ca/service-ca.crt"
    assert {"name": "isvc-logger-ca", "configMap": {"name": "sink-ca"}} in pod["volumes"]
    assert {"name": "isvc-logger-ca", "mountPath": "/etc/isvc-logger/ca", "readOnly": True} in (
        container["volumeMounts"])
    [init] = pod["initContainers"]
    assert all(mount["name"] != "isvc-logger-ca" for mount in init["volumeMounts"])


def test_an_http_sink_or_no_ca_bundle_mounts_nothing(isvc_factory) -> None:
    with_bundle = config_with(logger={"caBundle": "sink-ca"})
    for isvc, config in ((isvc_factory(logger={"url": "http://sink.ns/"}), with_bundle),
                         (isvc_factory(logger={"url": "https://sink.ns/"}), default_config())):
        ksvc = render_knative_service(isvc, config)
        assert [v["name"] for v in ksvc["spec"]["template"]["spec"]["volumes"]] == [
            "kfserving-provision-location"]
        assert "--logger-ca-bundle" not in runtime_container(ksvc)["args"]


def test_the_users_args_come_last_so_a_repeated_flag_wins(isvc_factory) -> None:
    isvc = isvc_factory(batcher={"maxBatchSize": 8}, pytorch={"args": ["--batch-size", "4"]})
    args = runtime_container(render_knative_service(isvc, default_config()))["args"]
    assert args[-2:] == ["--batch-size", "4"] and flags(args)["--batch-size"] == "4"


@pytest.mark.parametrize(("predictor", "field"), [
    ({"batcher": {"maxBatchSize": 0}}, "spec.predictor.batcher.maxBatchSize"),
    ({"batcher": {"timeout": "60"}}, "spec.predictor.batcher.timeout"),
    ({"batcher": {"maxLatency": True}}, "spec.predictor.batcher.maxLatency"),
    ({"logger": {"url": "ftp://sink"}}, "spec.predictor.logger.url"),
    ({"logger": {"mode": "both"}}, "spec.predictor.logger.mode"),
    ({"logger": "http://sink"}, "spec.predictor.logger"),
])
def test_a_stored_object_from_before_the_schema_is_refused_naming_the_field(
    isvc_factory, predictor: dict, field: str
) -> None:
    with pytest.raises(RenderError, match=field.replace(".", r"\.")):
        parse_inference_service(isvc_factory(**predictor))


@pytest.mark.parametrize(("section", "problem"), [
    ({"logger": {"defaultUrl": "ftp://x"}}, "data.logger.defaultUrl must be an http:// or https:// URL"),
    ({"logger": {"defaultUrl": "http://user:pw@x"}}, "data.logger.defaultUrl must be"),
    ({"logger": {"caBundle": "Not A Name"}}, "data.logger.caBundle must be a ConfigMap name"),
    ({"logger": {"caCertFile": "../etc/passwd"}}, "data.logger.caCertFile must be a key"),
    ({"logger": {"tlsSkipVerify": True}}, "data.logger.tlsSkipVerify is not a field of logger"),
    ({"batcher": {"maxBatchSize": 0}}, "data.batcher.maxBatchSize must be an integer from 1 to 1024"),
    ({"batcher": {"timeout": 1.5}}, "data.batcher.timeout must be an integer from 1 to 3600"),
])
def test_a_bad_logger_or_batcher_default_is_reported_and_default_kept(section: dict, problem: str) -> None:
    config = config_with(**section)
    assert any(p.startswith(problem) for p in config.problems), config.problems
    assert (config.logger, config.batcher) == (LoggerConfig(), BatcherConfig())


def test_a_configmap_from_before_the_logger_and_batcher_keys_gets_the_defaults_silently() -> None:
    data = {key: json.dumps(value) for key, value in DEFAULTS.items() if key not in ("logger", "batcher")}
    config = parse_config(data)
    assert (config.logger, config.batcher, config.problems) == (LoggerConfig(), BatcherConfig(), ())


def test_the_rendered_logger_flags_and_env_are_what_the_runtimes_logger_reads(isvc_factory) -> None:
    import argparse
    from pathlib import Path

    from isvc_runtime.payload_logger import LoggerSettings, add_logger_arguments, logger_settings
    from isvc_runtime.payload_logger.settings import Identity

    parser = argparse.ArgumentParser()
    add_logger_arguments(parser)

    def logger_flags(container: dict) -> argparse.Namespace:
        args = container["args"]
        return parser.parse_args(args[args.index("--logger-url"):])

    container = runtime_container(render_knative_service(
        isvc_factory(logger={"url": "http://sink.ns/e", "mode": "response"}), default_config()))
    env = {item["name"]: item["value"] for item in container["env"]}
    settings = logger_settings(logger_flags(container), env | {"K_SERVICE": "torchserve-predictor-default"})
    identity = Identity("torchserve-predictor-default", "torchserve", "kfserving-test")
    assert settings == LoggerSettings("http://sink.ns/e", "response", None, identity)
    https = runtime_container(render_knative_service(
        isvc_factory(logger={"url": "https://sink.ns/e"}), config_with(logger={"caBundle": "sink-ca"})))
    assert logger_flags(https).logger_ca_bundle == Path("/etc/isvc-logger/ca/ca.crt")
