"""The payload logger: KFServing's CloudEvents, sent to a real receiver on loopback and read back by the
`cloudevents` SDK; a sink that refuses, hangs or fails never delays an inference, and what is lost is
counted by reason."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import logging
import socket
import ssl
import time
from pathlib import Path

import pytest
from isvc_runtime.errors import ConfigError
from isvc_runtime.payload_logger import (
    REQUEST,
    RESPONSE,
    LoggerSettings,
    PayloadLogger,
    add_logger_arguments,
    logger_settings,
)
from isvc_runtime.payload_logger.dispatcher import backoff, warning_due
from isvc_runtime.payload_logger.events import wants
from isvc_runtime.payload_logger.metrics import LoggerCollector
from isvc_runtime.payload_logger.settings import Identity
from isvc_runtime.payload_logger.sink import SinkConnection
from prometheus_client import CollectorRegistry, generate_latest
from support.cloudevents_sink import cloudevents_sink

from e2e.processes import refusing_port

IDENTITY = Identity(source="mnist-predictor-default", inference_service="mnist", namespace="models")
CE_HEADERS = {"ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "ce-inferenceservicename",
              "ce-namespace", "ce-component", "ce-endpoint"}


def settings(url: str, mode: str = "all", ca_bundle: Path | None = None) -> LoggerSettings:
    return LoggerSettings(url=url, mode=mode, ca_bundle=ca_bundle, identity=IDENTITY)


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)




def test_each_request_and_response_is_a_kfserving_cloudevent_with_the_body_as_given() -> None:
    async def scenario(url: str) -> None:
        logger = PayloadLogger(settings(url))
        for number in range(25):
            logger.log_request(f"id-{number}", b'{"instances": [[%d]]}' % number, "application/json")
            logger.log_response(f"id-{number}", bytes([0, 255, number]), "application/octet-stream")
        await until(lambda: logger.sent == 50)
        await logger.stop()
        assert not logger.dropped

    with cloudevents_sink() as sink:
        asyncio.run(scenario(sink.url))
        requests, responses = sink.events(REQUEST), sink.events(RESPONSE)
    assert sorted(e.get_id() for e in requests) == sorted(e.get_id() for e in responses) == sorted(
        f"id-{n}" for n in range(25))
    for event in requests + responses:
        number = int(event.get_id().removeprefix("id-"))
        assert event.get_specversion() == "1.0" and event.get_source() == "mnist-predictor-default"
        assert event.get_time() is not None
        extensions = ("inferenceservicename", "namespace", "component", "endpoint")
        assert [event.get_extension(e) for e in extensions] == ["mnist", "models", "predictor", "default"]
        if event.get_type() == REQUEST:
            assert event.get_datacontenttype() == "application/json"
            assert event.get_data() in (b'{"instances": [[%d]]}' % number, {"instances": [[number]]})
        else:
            assert event.get_datacontenttype() == "application/octet-stream"
            assert event.get_data() == bytes([0, 255, number])


def test_the_body_reaches_the_sink_byte_for_byte_and_no_other_header_does() -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.5]}]}  '

    async def scenario(url: str) -> None:
        logger = PayloadLogger(settings(url))
        logger.log_request("7f0c", body, "application/json; charset=utf-8")
        await until(lambda: logger.sent == 1)
        await logger.stop()

    with cloudevents_sink() as sink:
        asyncio.run(scenario(sink.url))
        [received] = sink.received
    assert received.body == body
    assert received.header_names == CE_HEADERS | {"host", "content-type", "content-length"}


@pytest.mark.parametrize(("mode", "sent"), [("all", {REQUEST, RESPONSE}), ("request", {REQUEST}),
                                            ("response", {RESPONSE})])
def test_the_mode_chooses_which_events_are_sent(mode: str, sent: set[str]) -> None:
    assert {kind for kind in (REQUEST, RESPONSE) if wants(mode, kind)} == sent

    async def scenario(url: str) -> None:
        logger = PayloadLogger(settings(url, mode))
        logger.log_request("a", b"{}", "application/json")
        logger.log_response("a", b"{}", "application/json")
        await until(lambda: logger.sent == len(sent))
        await logger.stop()

    with cloudevents_sink() as sink:
        asyncio.run(scenario(sink.url))
        assert {e.get_type() for e in sink.events()} == sent


def test_an_event_id_that_would_break_a_header_is_percent_encoded_as_the_binding_says() -> None:
    async def scenario(url: str) -> None:
        logger = PayloadLogger(settings(url))
        logger.log_request('a "b" 100%\r\nx-injected: 1', b"{}", "application/json\r\nx-evil: 1")
        await until(lambda: logger.sent == 1)
        await logger.stop()

    with cloudevents_sink() as sink:
        asyncio.run(scenario(sink.url))
        [received] = sink.received
    assert received.event.get_id() == 'a "b" 100%\r\nx-injected: 1'
    assert "x-injected" not in received.header_names and "x-evil" not in received.header_names


def test_a_refused_connection_never_delays_logging_and_every_event_is_counted_as_dropped() -> None:
    async def scenario(url: str) -> PayloadLogger:
        logger = PayloadLogger(settings(url), queue_size=64)
        started = time.perf_counter()
        for number in range(5000):
            logger.log_request(str(number), b"{}", "application/json")
        elapsed = time.perf_counter() - started
        assert elapsed < 2.0, f"5000 log calls took {elapsed:.3f} s"
        await asyncio.sleep(0.4)  # the senders' first attempts fail and back off
        await logger.stop(drain_timeout=0.1)
        return logger

    with refusing_port() as port:
        logger = asyncio.run(scenario(f"http://127.0.0.1:{port}/"))
    assert logger.sent == 0 and sum(logger.dropped.values()) == 5000
    assert logger.dropped["queue_full"] > 4000
    assert logger.dropped["connection"] + logger.dropped["shutdown"] > 0


def test_a_sink_that_accepts_and_never_answers_times_out_and_the_overflow_is_dropped() -> None:
    async def scenario(url: str) -> PayloadLogger:
        logger = PayloadLogger(settings(url), queue_size=8, senders=2, max_attempts=1,
                               connect=lambda: SinkConnection(url, None, answer_timeout=0.2))
        for number in range(100):
            logger.log_request(str(number), b"{}", "application/json")
        await until(lambda: logger.dropped["timeout"] >= 2)
        await logger.stop(drain_timeout=0.1)
        return logger

    with cloudevents_sink() as sink:
        sink.answer = lambda _number: None
        logger = asyncio.run(scenario(sink.url))
    assert logger.sent == 0 and sum(logger.dropped.values()) == 100
    assert logger.dropped["queue_full"] >= 100 - 8 - 2


def test_a_5xx_is_retried_with_backoff_and_delivered_a_4xx_is_dropped_at_once() -> None:
    assert [backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]

    async def scenario(url: str) -> PayloadLogger:
        logger = PayloadLogger(settings(url), senders=1)
        logger.log_request("retried", b"{}", "application/json")
        await until(lambda: logger.sent == 1)
        logger.log_request("refused", b"{}", "application/json")
        await until(lambda: logger.dropped["status"] == 1)
        await logger.stop()
        return logger

    with cloudevents_sink() as sink:
        sink.answer = lambda number: {1: 503, 2: 500, 4: 400}.get(number, 200)
        asyncio.run(scenario(sink.url))
        assert [e.get_id() for e in sink.events()] == ["retried"] and sink.requests == 4


def test_drops_are_warned_about_at_most_once_a_minute_naming_the_sink_host_only(caplog) -> None:
    assert warning_due(None, 0.0) and not warning_due(100.0, 159.0) and warning_due(100.0, 160.0)
    now = [1000.0]

    async def scenario(url: str) -> None:
        logger = PayloadLogger(settings(url), queue_size=1, senders=1, clock=lambda: now[0])
        for number in range(50):
            logger.log_request(str(number), b"{}", "application/json")
        now[0] += 61
        logger.log_request("late", b"{}", "application/json")
        await logger.stop(drain_timeout=0.05)

    with caplog.at_level(logging.WARNING, logger="isvc_runtime.payload_logger"), refusing_port() as port:
        asyncio.run(scenario(f"http://127.0.0.1:{port}/events?token=secret"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert all("secret" not in w and "/events" not in w for w in warnings)
    assert "queue_full 1" in warnings[0] and "queue_full 50" in warnings[1]


@pytest.mark.parametrize(("mode", "per_inference"), [("all", 2), ("request", 1), ("response", 1)])
def test_while_the_queue_is_full_an_inference_is_not_recorded_and_its_events_count_as_dropped(
    mode: str, per_inference: int
) -> None:
    async def scenario() -> None:
        with socket.create_server(("127.0.0.1", 0)) as hanging:  # accepts (backlog), never answers
            url = f"http://127.0.0.1:{hanging.getsockname()[1]}/"
            logger = PayloadLogger(settings(url, mode), queue_size=2, senders=1, max_attempts=1)
            assert not logger.saturated()
            for number in range(3):  # the sender takes one and hangs; two fill the queue
                logger.log_request(f"id-{number}", b"{}", "application/json")
                logger.log_response(f"id-{number}", b"{}", "application/json")
                await asyncio.sleep(0.05)
            assert logger.saturated()
            before = logger.dropped["queue_full"]
            logger.drop_unrecorded()
            assert logger.dropped["queue_full"] == before + per_inference
            await logger.stop(drain_timeout=0.1)

    asyncio.run(scenario())


def test_dropped_and_sent_events_are_prometheus_counters_by_reason() -> None:
    logger = PayloadLogger(settings("http://127.0.0.1:9/"))
    logger.dropped.update({"queue_full": 3, "timeout": 1})
    logger.sent = 7
    registry = CollectorRegistry()
    registry.register(LoggerCollector(logger, "mnist", "mnist-predictor-default-00001"))
    text = generate_latest(registry).decode()
    identity = 'isvc="mnist",revision="mnist-predictor-default-00001"'
    assert f"isvc_logger_events_sent_total{{{identity}}} 7.0" in text
    for reason, count in (("queue_full", 3.0), ("timeout", 1.0), ("connection", 0.0)):
        labels = f'isvc="mnist",reason="{reason}",revision="mnist-predictor-default-00001"'
        assert f"isvc_logger_events_dropped_total{{{labels}}} {count}" in text


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_logger_arguments(parser)
    return parser.parse_args(argv)


def test_flags_and_env_become_the_settings() -> None:
    env = {"ISVC_NAME": "mnist", "ISVC_NAMESPACE": "models", "K_SERVICE": "mnist-predictor-default"}
    assert logger_settings(parse([]), env) is None
    given = logger_settings(parse(["--logger-url", "http://sink:8080/e", "--logger-mode", "response"]), env)
    assert given == LoggerSettings("http://sink:8080/e", "response", None, IDENTITY)
    assert logger_settings(parse(["--logger-url", "http://sink"]), {}).identity.source == "isvc-runtime"


@pytest.mark.parametrize("argv", [
    ["--logger-url", "ftp://sink/"], ["--logger-url", "sink:8080"], ["--logger-url", "http://u:p@sink/"],
    ["--logger-url", "http://sink/\u00e9"],
    ["--logger-url", "https://sink/", "--logger-ca-bundle", "/nonexistent"],
])
def test_a_bad_logger_flag_is_a_config_error_naming_it(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match="--logger-"):
        logger_settings(parse(argv), {})


def certificate_authority(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA's PEM file and a server context whose certificate (127.0.0.1) that CA signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("sink")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return ca_file, server


def test_an_https_sink_is_verified_with_the_ca_bundle_and_refused_without_it(tmp_path: Path) -> None:
    ca_file, server_context = certificate_authority(tmp_path)

    async def scenario(url: str, ca_bundle: Path | None) -> PayloadLogger:
        logger = PayloadLogger(settings(url, ca_bundle=ca_bundle), senders=1, max_attempts=1)
        logger.log_request("tls", b"{}", "application/json")
        await until(lambda: logger.sent + sum(logger.dropped.values()) == 1)
        await logger.stop()
        return logger

    with cloudevents_sink(server_context) as sink:
        assert asyncio.run(scenario(sink.url, ca_file)).sent == 1
        assert asyncio.run(scenario(sink.url, None)).dropped == {"connection": 1}  # the system CAs
        assert [e.get_id() for e in sink.events()] == ["tls"]
