"""The example model served from its model.tar.gz by a real ``serve`` process, real clients."""

from __future__ import annotations

import json
import pickle
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from servetools import EXAMPLE, Server, from_npy, npy, npy_with_header

from chainer_sagemaker_runtime.serving import codecs

NPY, JSON, CSV = "application/x-npy", "application/json", "text/csv"


@pytest.fixture(scope="module")
def test_set(digits_model: dict[str, Path]) -> np.ndarray:
    x = np.load(digits_model["test"] / "test.npz")["x"]
    return x.astype(np.float32) / 255.0  # the whole digits test set


@pytest.fixture(scope="module")
def in_process(digits_model: dict[str, Path], test_set: np.ndarray) -> np.ndarray:
    """The same model loaded in this process: what the server must answer."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import chainer
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    model = train.model_fn(str(digits_model["dir"]))
    with chainer.using_config("train", False), chainer.no_backprop_mode():
        return np.asarray(model(test_set).array)


def _encode(ctype: str, x: np.ndarray) -> bytes:
    return {NPY: codecs.encode_npy, JSON: codecs.encode_json, CSV: codecs.encode_csv}[ctype](x)


def _decode(ctype: str, body: bytes) -> np.ndarray:
    if ctype == NPY:
        return np.asarray(from_npy(body))
    if ctype == JSON:
        return np.asarray(json.loads(body), dtype=np.float32)
    return codecs.decode_csv(body)


def test_ping_and_execution_parameters(digits_server: Server) -> None:
    status, _, body = digits_server.request("GET", "/ping")
    assert (status, body) == (200, b"")
    status, headers, body = digits_server.request("GET", "/execution-parameters")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "MaxConcurrentTransforms": 2,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 6,
    }


def test_predictions_equal_the_in_process_model(
    digits_server: Server, test_set: np.ndarray, in_process: np.ndarray
) -> None:
    status, headers, body = digits_server.invoke(npy(test_set), NPY, NPY)
    assert status == 200
    assert headers["content-type"] == NPY
    got = from_npy(body)
    assert got.dtype == np.float32
    assert got.shape == (len(test_set), 10)
    np.testing.assert_allclose(got, in_process, rtol=1e-5, atol=1e-5)
    assert (got.argmax(1) == in_process.argmax(1)).all()


@pytest.mark.parametrize("ctype", [NPY, JSON, CSV])
@pytest.mark.parametrize("accept", [NPY, JSON, CSV])
def test_every_content_type_with_every_accept(
    digits_server: Server, test_set: np.ndarray, in_process: np.ndarray, ctype: str, accept: str
) -> None:
    status, headers, body = digits_server.invoke(_encode(ctype, test_set[:5]), ctype, accept)
    assert status == 200, body
    assert headers["content-type"] == accept
    np.testing.assert_allclose(_decode(accept, body), in_process[:5], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("", JSON),
        ("text/csv; q=0.9", CSV),
        ("image/png, application/x-npy, application/json", NPY),
        ("text/*", CSV),
        ("application/x-npy;q=1", NPY),
    ],
)
def test_accept_negotiation(
    digits_server: Server, test_set: np.ndarray, accept: str | None, expected: str
) -> None:
    status, headers, _ = digits_server.invoke(npy(test_set[:1]), NPY, accept)
    assert (status, headers["content-type"]) == (200, expected)


@pytest.mark.parametrize(
    "ctype",
    ["application/json; charset=utf-8", "Application/JSON", None, "application/json;charset=UTF-8"],
)
def test_content_type_parameters_and_default(
    digits_server: Server, test_set: np.ndarray, ctype: str | None
) -> None:
    status, _, body = digits_server.invoke(json.dumps(test_set[:2].tolist()), ctype, JSON)
    assert status == 200, body
    assert np.asarray(json.loads(body)).shape == (2, 10)


def test_contenttype_header_of_other_aws_services(
    digits_server: Server, test_set: np.ndarray
) -> None:
    body = npy(test_set[:1])
    status, _, _ = digits_server.request("POST", "/invocations", body, {"ContentType": NPY})
    assert status == 200


@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28), (3, 1, 28, 28)])
def test_image_shaped_inputs(
    digits_server: Server, test_set: np.ndarray, shape: tuple[int, ...]
) -> None:
    status, _, body = digits_server.invoke(npy(test_set[:3].reshape(shape)), NPY, NPY)
    assert status == 200
    assert from_npy(body).shape == (3, 10)


def test_keep_alive_connection_serves_many_requests(
    digits_server: Server, test_set: np.ndarray
) -> None:
    conn = digits_server.connect()
    try:
        for i in range(20):
            status, _, body = digits_server.invoke(npy(test_set[i : i + 1]), NPY, NPY, conn=conn)
            assert status == 200
            assert from_npy(body).shape == (1, 10)
    finally:
        conn.close()


def test_concurrent_clients_get_their_own_answers(
    digits_server: Server, test_set: np.ndarray, in_process: np.ndarray
) -> None:
    """Server-side batching stacks concurrent requests; each reply must still be its own rows."""
    errors: list[str] = []

    def client(offset: int) -> None:
        conn = digits_server.connect()
        try:
            for i in range(offset, 64, 8):
                rows = test_set[i : i + 1 + i % 3]
                status, _, body = digits_server.invoke(npy(rows), NPY, NPY, conn=conn)
                got = from_npy(body) if status == 200 else None
                want = in_process[i : i + 1 + i % 3]
                if got is None or got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
                    errors.append(f"request {i}: status {status}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


BAD_INPUTS: dict[str, tuple[bytes, str | None, str | None, int]] = {
    "truncated npy": (npy(np.ones((2, 784), np.float32))[:-7], NPY, None, 400),
    "object dtype npy": (
        npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8),
        NPY,
        None,
        400,
    ),
    "pickled object array": (
        pickle.dumps(np.ones(3)),
        NPY,
        None,
        400,
    ),
    "wrong magic": (b"\x93NUMPX" + npy(np.ones(3))[6:], NPY, None, 400),
    "huge header": (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{", NPY, None, 400),
    "ragged json": (b"[[1, 2], [3]]", JSON, None, 400),
    "json object": (b'{"instances": [[0.5]]}', JSON, None, 400),
    "invalid json": (b"[[0.1, 0.2", JSON, None, 400),
    "non-numeric csv": (b"a,b,c\n1,2,3\n", CSV, None, 400),
    "empty body npy": (b"", NPY, None, 400),
    "empty body json": (b"", JSON, None, 400),
    "empty body csv": (b"", CSV, None, 400),
    "unsupported content type": (b"<x/>", "application/xml", None, 415),
    "unsupported accept": (npy(np.ones((1, 784), np.float32)), NPY, "image/png", 406),
    "wrong shape for the model": (npy(np.ones((1, 5), np.float32)), NPY, None, 400),
    "non-utf8 csv": (b"\xff\xfe1,2", CSV, None, 400),
}


@pytest.fixture
def healthy(digits_server: Server) -> Iterator[Server]:
    yield digits_server
    assert digits_server.request("GET", "/ping")[0] == 200
    assert digits_server.proc.poll() is None


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_corpus(healthy: Server, name: str) -> None:
    body, ctype, accept, expected = BAD_INPUTS[name]
    status, headers, reply = healthy.invoke(body, ctype, accept)
    assert status == expected, reply
    assert headers["content-type"] == "application/json"
    error = json.loads(reply)
    assert set(error) == {"error", "message"}
    assert error["message"]


def test_seven_megabyte_body_is_413_and_connection_still_usable(
    healthy: Server, test_set: np.ndarray
) -> None:
    conn = healthy.connect()
    try:
        big = b"0" * (7 * 1024 * 1024)
        status, _, reply = healthy.invoke(big, JSON, conn=conn)
        assert status == 413
        assert json.loads(reply)["error"] == "payload_too_large"
        status, _, _ = healthy.invoke(npy(test_set[:1]), NPY, conn=conn)
        assert status == 200
    finally:
        conn.close()


def test_unknown_route_and_wrong_method(healthy: Server) -> None:
    assert healthy.request("GET", "/nope")[0] == 404
    assert healthy.request("GET", "/invocations")[0] == 405
    assert healthy.request("POST", "/ping", b"")[0] == 405


def _raw(server: Server, data: bytes, expect_responses: int = 1) -> bytes:
    """Send raw bytes and read until ``expect_responses`` responses (or the server closes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < expect_responses or not received.endswith(
            (b"}", b"\r\n\r\n", b"]")
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_pipelined_requests_are_answered_in_order(healthy: Server) -> None:
    one = b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    reqs = b"".join(
        one + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        for body in (b"[[" + b",".join([str(i).encode()] * 784) + b"]]" for i in range(3))
    )
    reqs += b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"
    received = _raw(healthy, reqs, expect_responses=4)
    assert received.count(b"HTTP/1.1 200 OK") == 4
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in received.split(b"HTTP/1.1 ")[1:]]
    outputs = [json.loads(b) for b in bodies[:3]]
    assert len({json.dumps(o) for o in outputs}) == 3  # three different inputs, in order
    assert bodies[3] == b""


def test_expect_100_continue(healthy: Server) -> None:
    body = b"[[" + b",".join([b"0"] * 784) + b"]]"
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", healthy.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    "data",
    [
        b"NONSENSE\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nbad header line\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
    ],
)
def test_malformed_requests_are_400(healthy: Server, data: bytes) -> None:
    assert _raw(healthy, data).startswith(b"HTTP/1.1 400 Bad Request")


def _chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"


def test_chunked_request_bodies(healthy: Server, test_set: np.ndarray) -> None:
    body = npy(test_set[:2])
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-npy\r\n"
        b"Accept: application/x-npy\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    reply = _raw(healthy, head + _chunked(body, 1000) + b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n", 2)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    npy_reply = reply.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1 ")[0]
    assert from_npy(npy_reply).shape == (2, 10)
    assert reply.count(b"HTTP/1.1 200 OK") == 2  # the connection carried on after the body


def test_chunked_body_over_the_limit_is_413_and_connection_still_usable(
    healthy: Server,
) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = head + _chunked(b"0" * (7 * 1024 * 1024), 1024 * 1024)
    reply = _raw(healthy, data + b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n", 2)
    assert reply.startswith(b"HTTP/1.1 413 Payload Too Large")
    assert b"HTTP/1.1 200 OK" in reply


def test_unknown_transfer_encoding_is_501(healthy: Server) -> None:
    head = b"POST /invocations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    assert _raw(healthy, head).startswith(b"HTTP/1.1 501 Not Implemented")


# batch transform's mini-batches (issue 13): one output record per input record -------------
def test_multi_record_lines_get_one_output_line_each(
    healthy: Server, test_set: np.ndarray, in_process: np.ndarray
) -> None:
    rows = test_set[:5]
    jsonl = b"".join(codecs.encode_json(r) + b"\n" for r in rows)
    for ctype, accept in (
        (JSON, JSON),
        ("application/jsonlines", "application/jsonlines"),
        (CSV, CSV),
        (CSV, JSON),
    ):
        body = codecs.encode_csv(rows) if ctype == CSV else jsonl
        status, headers, reply = healthy.invoke(body, ctype, accept)
        assert status == 200, reply
        lines = reply.decode().strip().split("\n")
        if ctype == CSV and accept == JSON:  # a CSV mini-batch asked for as one JSON document
            got = np.asarray(json.loads(reply), dtype=np.float32)
        elif accept == CSV:
            got = np.asarray([[float(v) for v in line.split(",")] for line in lines])
        else:
            assert headers["content-type"] == "application/jsonlines"
            got = np.asarray([json.loads(line) for line in lines], dtype=np.float32)
        assert got.shape == (5, 10), (ctype, accept)
        np.testing.assert_allclose(got, in_process[:5], rtol=1e-4, atol=1e-4)


def test_single_record_csv_line_is_one_row(
    healthy: Server, test_set: np.ndarray, in_process: np.ndarray
) -> None:
    status, _, reply = healthy.invoke(codecs.encode_csv(test_set[7]), CSV, CSV)
    assert status == 200, reply
    got = np.asarray([float(v) for v in reply.decode().strip().split(",")])
    np.testing.assert_allclose(got, in_process[7], rtol=1e-4, atol=1e-4)


def test_bad_json_lines_record_is_named(healthy: Server) -> None:
    status, _, reply = healthy.invoke(b"[0.5, 0.5]\n[0.5, oops]\n", "application/jsonlines")
    assert status == 400
    assert "record 2" in json.loads(reply)["message"]
