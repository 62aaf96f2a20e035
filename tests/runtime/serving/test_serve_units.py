"""Settings and the handler core in process (no HTTP): negotiation, hooks, errors."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

from chainer_sagemaker_runtime.errors import CodeError, ConfigError
from chainer_sagemaker_runtime.serving import codecs
from chainer_sagemaker_runtime.serving.config import ServingConfig
from chainer_sagemaker_runtime.serving.errors import (
    BadRequest,
    InternalError,
    NotAcceptable,
    ServingError,
    UnsupportedMediaType,
)
from chainer_sagemaker_runtime.serving.handler import Handler, Hooks, media_type

pytestmark = pytest.mark.compat


def test_config_defaults() -> None:
    config = ServingConfig.from_env({"SAGEMAKER_PROGRAM": "inference.py"})
    assert config.port == 8080
    assert config.timeout == 60
    assert config.default_accept == "application/json"
    assert config.max_payload_bytes == 6 * 1024 * 1024
    assert config.workers >= 1
    assert config.model_dir == Path("/opt/ml/model")
    assert config.batching


def test_config_reads_every_variable() -> None:
    config = ServingConfig.from_env(
        {
            "SAGEMAKER_PROGRAM": "x.py",
            "SAGEMAKER_BASE_DIR": "/tmp/ml",
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "2.5",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv; charset=utf-8",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1",
            "SAGEMAKER_REGION": "eu-west-1",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "10",
            "CHAINER_SAGEMAKER_BATCHING": "0",
            "SAGEMAKER_BIND_TO_HOST": "127.0.0.1",
        }
    )
    assert config.host == "127.0.0.1"
    assert (config.port, config.workers, config.timeout) == (9000, 3, 2.5)
    assert config.default_accept == "text/csv"
    assert config.max_payload_bytes == 1024 * 1024
    assert config.region == "eu-west-1"
    assert config.log_level == 10
    assert config.model_dir == Path("/tmp/ml/model")
    assert not config.batching


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        ServingConfig.from_env(
            {
                "SAGEMAKER_BIND_TO_PORT": "http",
                "SAGEMAKER_MODEL_SERVER_WORKERS": "0",
                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "lots",
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "chatty",
            }
        )
    assert len(info.value.problems) == 5  # the four above and the missing SAGEMAKER_PROGRAM
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json; charset=utf-8", "application/json"),
        ("  Text/CSV ", "text/csv"),
        ("", "application/json"),
        (None, "application/json"),
    ],
)
def test_media_type(header: str | None, expected: str) -> None:
    assert media_type(header, "application/json") == expected


def _module(**hooks: object) -> types.ModuleType:
    module = types.ModuleType("user")
    for name, fn in hooks.items():
        setattr(module, name, fn)
    return module


def _handler(**hooks: object) -> Handler:
    found = Hooks.from_module(_module(model_fn=lambda d: lambda x: x * 2, **hooks))
    return Handler(found, found.model_fn("/nowhere"), "application/json")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("image/png, text/csv", "text/csv"),
        ("application/*", "application/json"),
        ("text/*;q=0.5", "text/csv"),
        ("application/x-npy, application/json", "application/x-npy"),
    ],
)
def test_negotiation_picks_the_first_supported(accept: str | None, expected: str) -> None:
    assert _handler().negotiate(accept) == expected


def test_negotiation_without_a_supported_type() -> None:
    with pytest.raises(NotAcceptable):
        _handler().negotiate("image/png, audio/*")
    custom = _handler(output_fn=lambda p, a: b"x")
    assert custom.negotiate("image/png, audio/*") == "image/png"  # output_fn decides


def test_missing_or_non_callable_model_fn() -> None:
    with pytest.raises(CodeError, match="defines no model_fn"):
        Hooks.from_module(_module(predict_fn=lambda x, m: x))
    with pytest.raises(CodeError, match="is not a function"):
        Hooks.from_module(_module(model_fn=lambda d: None, input_fn="nope"))


def test_default_pipeline_in_process() -> None:
    body = codecs.encode_npy(np.ones((1, 2), np.float32))
    reply = _handler().invoke(body, "application/x-npy", None)
    assert reply.content_type == "application/json"
    assert reply.body.replace(b" ", b"") == b"[[2.0,2.0]]"
    # no Content-Type means JSON, so an NPY body is a 400, not a crash
    with pytest.raises(BadRequest):
        _handler().invoke(body, None, None)
    reply = _handler().invoke(b"[[1, 2]]", "application/json", "application/x-npy")
    np.testing.assert_array_equal(codecs.decode_npy(reply.body), [[2, 4]])
    with pytest.raises(UnsupportedMediaType):
        _handler().invoke(b"x", "application/xml", None)


def test_user_errors_become_500_and_serving_errors_pass_through() -> None:
    def predict_fn(x: object, m: object) -> object:
        raise KeyError("feature")

    with pytest.raises(InternalError, match="predict_fn raised KeyError"):
        _handler(predict_fn=predict_fn).invoke(b"[1]", None, None)

    class Teapot(ServingError):
        status = 418
        error = "teapot"

    def input_fn(body: object, ctype: str) -> object:
        raise Teapot("short and stout")

    with pytest.raises(Teapot):
        _handler(input_fn=input_fn).invoke(b"[1]", None, None)


def test_output_fn_must_return_bytes() -> None:
    handler = _handler(output_fn=lambda p, a: {"not": "bytes"})
    with pytest.raises(InternalError, match="output_fn returned dict"):
        handler.invoke(b"[1]", None, None)
    handler = _handler(output_fn=lambda p, a: ("text", "text/plain"))
    reply = handler.invoke(b"[1]", None, None)
    assert (reply.body, reply.content_type) == (b"text", "text/plain")


def test_batchable_only_with_the_default_predict_fn() -> None:
    assert _handler().batchable
    assert _handler(input_fn=lambda b, c: b).batchable
    assert not _handler(predict_fn=lambda x, m: x).batchable
    assert not _handler(transform_fn=lambda m, b, c, a: b"").batchable


def test_linear_weights_become_column_major_only_for_the_default_predict_fn() -> None:
    import chainer
    from chainer import links

    def make() -> chainer.Chain:
        chain = chainer.Sequential(links.Linear(4, 3), links.Linear(3, 2))
        for link in chain.links():
            if isinstance(link, links.Linear):
                assert link.W.array.flags.c_contiguous
        return chain

    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    reference = make()
    before = np.asarray(reference(x).array)

    hooks = Hooks.from_module(_module(model_fn=lambda d: reference))
    handler = Handler(hooks, reference, "application/json", optimize=True)
    linears = [link for link in reference.links() if isinstance(link, links.Linear)]
    assert all(link.W.array.flags.f_contiguous for link in linears)
    np.testing.assert_allclose(handler.predict(x), before, rtol=1e-6, atol=1e-6)

    untouched = make()
    custom = Hooks.from_module(_module(model_fn=lambda d: untouched, predict_fn=lambda x, m: x))
    Handler(custom, untouched, "application/json", optimize=True)
    linears = [link for link in untouched.links() if isinstance(link, links.Linear)]
    assert all(link.W.array.flags.c_contiguous for link in linears)


def test_output_fn_may_return_a_response_object_like_old_scripts() -> None:
    class Response:  # the shape of sagemaker_containers' worker.Response (a Flask response)
        mimetype = "text/csv"

        def get_data(self) -> bytes:
            return b"1,2\n"

    reply = _handler(output_fn=lambda p, a: Response()).invoke(b"[1]", None, None)
    assert (reply.body, reply.content_type) == (b"1,2\n", "text/csv")
