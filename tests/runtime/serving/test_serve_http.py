"""The HTTP layer of ``serve`` against what clients and networks really send (issue 11).

Raw byte strings with the answers RFC 9112/9110 require (request smuggling shapes, obs-fold,
bare CR/LF, NUL, bad chunk sizes, trailers, pipelining order, HEAD, HTTP/1.0), each sent whole
and split at random points across reads; then the resource limits (flow control, deadlines,
connection cap, file descriptors), one poisoned request among innocent ones, lingering close,
and the port being ours alone. Every test talks to a real ``serve`` on 127.0.0.1.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from servetools import Server, from_npy, npy, npy_with_header

StartServer = Callable[..., Server]

# The model adds 1 and appends a column holding the number of rows of the predict call that
# produced the row, so batching can be seen from outside.
MODEL = """
import numpy as np

def model_fn(model_dir):
    def model(x):
        if x.shape[1] != 2:
            raise ValueError(f"this model takes two columns, not {x.shape[1]}")
        return np.concatenate([x + 1, np.full((len(x), 1), len(x), x.dtype)], axis=1)
    return model
"""

HOOKS = """
import json, time

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return body

def predict_fn(data, model):
    if data.startswith("sleep"):
        time.sleep(float(data.split()[1]))
    return data

def output_fn(prediction, accept):
    if prediction.startswith("type "):
        return "typed", prediction[5:]
    return json.dumps({"echo": prediction, "accept": accept}), "application/json"
"""

H = b"Host: t\r\n"
JSON_ONE = b"[[1, 2]]"
INVOKE = (
    b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
    b"Content-Length: 8\r\n\r\n" + JSON_ONE
)
PING = b"GET /ping HTTP/1.1\r\n" + H + b"\r\n"
LAST = b"GET /ping HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n"  # proves the stream is in step


def _post(headers: bytes, body: bytes = b"") -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\n"
        + H
        + b"Content-Type: application/json\r\n"
        + (headers + b"\r\n" + body)
    )


def _chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# name: (bytes sent, the statuses answered in order, methods of those requests when HEAD matters)
CASES: dict[str, tuple[bytes, list[int]]] = {
    # request smuggling shapes: framing must be unambiguous or refused
    "CL.TE": (_post(b"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n", _chunked()), [400]),
    "TE.CL": (_post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", _chunked()), [400]),
    "space before colon": (_post(b"Transfer-Encoding : chunked\r\n", _chunked()), [400]),
    "obs-fold": (_post(b"X-A: a\r\n b\r\nContent-Length: 8\r\n", JSON_ONE), [400]),
    "obs-fold into TE": (_post(b"Transfer-Encoding: gzip,\r\n chunked\r\n", _chunked()), [400]),
    "vertical tab before chunked": (
        _post(b"Transfer-Encoding: \x0bchunked\r\n", _chunked()),
        [400],
    ),
    "NBSP after chunked": (_post(b"Transfer-Encoding: chunked\xa0\r\n", _chunked()), [400]),
    "two different Content-Length": (
        _post(b"Content-Length: 8\r\nContent-Length: 3\r\n", JSON_ONE),
        [400],
    ),
    "Content-Length 3_5": (_post(b"Content-Length: 0_8\r\n", JSON_ONE), [400]),
    "Content-Length +8": (_post(b"Content-Length: +8\r\n", JSON_ONE), [400]),
    "Content-Length -5": (_post(b"Content-Length: -5\r\n"), [400]),
    "chunk size 0x8": (
        _post(b"Transfer-Encoding: chunked\r\n", b"0x8\r\n" + JSON_ONE + b"\r\n0\r\n\r\n"),
        [400],
    ),
    "chunk size +8": (
        _post(b"Transfer-Encoding: chunked\r\n", b"+8\r\n" + JSON_ONE + b"\r\n0\r\n\r\n"),
        [400],
    ),
    "chunk size 0_8": (
        _post(b"Transfer-Encoding: chunked\r\n", b"0_8\r\n" + JSON_ONE + b"\r\n0\r\n\r\n"),
        [400],
    ),
    "chunk size zz": (_post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n"), [400]),
    "chunk data without CRLF": (
        _post(b"Transfer-Encoding: chunked\r\n", b"8\r\n" + JSON_ONE + b"XX0\r\n\r\n"),
        [400],
    ),
    "chunk size overflow": (
        _post(b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffff\r\nx\r\n"),
        [400],
    ),
    "bare LF in a header value": (_post(b"X-A: a\nSet-Cookie: b\r\nContent-Length: 0\r\n"), [400]),
    "bare LF line ends": (b"GET /ping HTTP/1.1\nHost: t\n\n", [400]),
    "bare CR in a header value": (_post(b"X-A: a\rb\r\nContent-Length: 0\r\n"), [400]),
    "NUL in a header value": (_post(b"X-A: a\x00b\r\nContent-Length: 0\r\n"), [400]),
    "header without a colon": (_post(b"bad header line\r\n"), [400]),
    "no Host": (b"GET /ping HTTP/1.1\r\n\r\n", [400]),
    "two Host": (b"GET /ping HTTP/1.1\r\n" + H + H + b"\r\n", [400]),
    "lower-case method": (b"get /ping HTTP/1.1\r\n" + H + b"\r\n", [400]),
    "not a path": (b"GET ping HTTP/1.1\r\n" + H + b"\r\n", [400]),
    "HTTP/1.2": (b"GET /ping HTTP/1.2\r\n" + H + b"\r\n", [400]),
    "HTTP/2.0 text": (b"GET /ping HTTP/2.0\r\n" + H + b"\r\n", [505]),
    "HTTP/0.9": (b"GET /ping\r\n\r\n", [505]),
    "garbage": (b"NONSENSE\r\n\r\n", [400]),
    "Transfer-Encoding gzip": (_post(b"Transfer-Encoding: gzip\r\n"), [400]),
    "Transfer-Encoding gzip, chunked": (_post(b"Transfer-Encoding: gzip, chunked\r\n"), [501]),
    "unknown Expect": (_post(b"Expect: magic\r\nContent-Length: 0\r\n"), [400]),
    # what must work, with the connection still in step afterwards
    "chunked with extension and trailer": (
        _post(
            b"Transfer-Encoding: chunked\r\n", b"3;x=y\r\n[[1\r\n5\r\n, 2]]\r\n0\r\nX-T: 1\r\n\r\n"
        )
        + LAST,
        [200, 200],
    ),
    "leading empty line": (b"\r\n" + PING + LAST, [200, 200]),
    "pipelined order": (
        INVOKE + PING + b"GET /nope HTTP/1.1\r\n" + H + b"\r\n" + INVOKE + LAST,
        [200, 200, 404, 200, 200],
    ),
    "framing error after pipelined requests": (
        PING + INVOKE + b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: x\r\n\r\n",
        [200, 200, 400],
    ),
    "HEAD": (
        b"HEAD /ping HTTP/1.1\r\n" + H + b"\r\n"
        b"HEAD /execution-parameters HTTP/1.1\r\n" + H + b"\r\n"
        b"HEAD /invocations HTTP/1.1\r\n" + H + b"\r\n" + LAST,
        [200, 200, 405, 200],
    ),
    "HTTP/1.0 closes": (b"GET /ping HTTP/1.0\r\n\r\n" + PING, [200]),
    "HTTP/1.0 keep-alive": (
        b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + LAST,
        [200, 200],
    ),
    "bytes after Connection: close are not read": (LAST + PING, [200]),
    "upgrade is not offered": (
        b"GET /ping HTTP/1.1\r\n" + H + b"Connection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" + LAST,
        [200, 200],
    ),
    "wrong method": (
        b"POST /ping HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n" + LAST,
        [405, 200],
    ),
    "too many headers": (_post(b"".join(b"X-%d: 1\r\n" % i for i in range(101))), [431]),
    "head too large": (_post(b"X-Big: " + b"a" * (70 * 1024) + b"\r\n"), [431]),
    "trailer too large": (
        _post(b"Transfer-Encoding: chunked\r\n", b"0\r\nX-T: " + b"a" * (40 * 1024) + b"\r\n\r\n"),
        [431],
    ),
}


def _parse(data: bytes, heads: list[bool]) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a response stream (heads[i]: the i-th answer is to a HEAD: it has no body)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"header {name} twice"
            headers[name.lower()] = value.strip()
        if status == 100:
            out.append((status, headers, b""))
            data = rest
            continue
        is_head = heads[len([o for o in out if o[0] != 100])] if heads else False
        length = 0 if is_head else int(headers["content-length"])
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def _exchange(server: Server, data: bytes, pieces: int = 1, seed: int = 0) -> bytes:
    """Send ``data`` (in ``pieces`` parts cut at seeded random points) and read until closed."""
    cuts = sorted(random.Random(seed).sample(range(1, len(data)), min(pieces - 1, len(data) - 1)))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for part in parts:
                sock.sendall(part)
                if len(parts) > 1:
                    time.sleep(0.003)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before everything was sent
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("http")
    code = base / "code"
    code.mkdir()
    (code / "inference.py").write_text(MODEL)
    (base / "model").mkdir()
    env = {
        "CHAINER_SAGEMAKER_MAX_BATCH_ROWS": "4",
        "CHAINER_SAGEMAKER_HEADER_TIMEOUT": "1",
        "CHAINER_SAGEMAKER_KEEPALIVE": "2",
        "CHAINER_SAGEMAKER_MAX_CONNECTIONS": "24",
    }
    srv = Server(base, code, "inference.py", env)
    srv.wait_ready()
    yield srv
    srv.stop()


def _heads(data: bytes) -> list[bool]:
    return [line.startswith(b"HEAD ") for line in data.split(b"\r\n") if b" HTTP/1." in line]


@pytest.mark.parametrize("name", list(CASES))
def test_raw_requests_get_the_answers_the_rfc_requires(server: Server, name: str) -> None:
    data, statuses = CASES[name]
    for pieces, seed in ((1, 0), (4, 1), (9, 2)):  # whole, then split at random points
        responses = _parse(_exchange(server, data, pieces, seed), _heads(data))
        assert [r[0] for r in responses] == statuses, (pieces, responses)
        for status, headers, body in responses:
            if status >= 400:
                assert headers["content-type"] == "application/json"
                if body:  # HEAD answers carry none
                    assert json.loads(body)["message"]
    assert server.request("GET", "/ping")[0] == 200


def test_pipelined_answers_are_each_requests_own(server: Server) -> None:
    bodies = [b"[[%d, %d]]" % (i, -i) for i in range(6)]
    data = b"".join(_post(b"Content-Length: %d\r\n" % len(b), b) for b in bodies) + LAST
    for pieces, seed in ((1, 0), (7, 3)):
        responses = _parse(_exchange(server, data, pieces, seed), [])
        assert [r[0] for r in responses] == [200] * 7
        for i, (_, _, body) in enumerate(responses[:6]):
            row = json.loads(body)[0]
            assert row[:2] == [i + 1, -i + 1]
            assert row[2] <= 4  # CHAINER_SAGEMAKER_MAX_BATCH_ROWS counts rows


def test_batch_rows_limit_counts_rows(server: Server) -> None:
    """Three-row requests with a limit of 4 rows: no predict call gets more than 4 rows."""
    body = b"[[1, 1], [2, 2], [3, 3]]"
    data = b"".join(_post(b"Content-Length: %d\r\n" % len(body), body) for _ in range(5)) + LAST
    responses = _parse(_exchange(server, data), [])
    assert [r[0] for r in responses] == [200] * 6
    for _, _, reply in responses[:5]:
        assert [row[2] for row in json.loads(reply)] == [3, 3, 3]


def test_expect_100_continue_waits_its_turn_and_not_for_http_1_0(server: Server) -> None:
    head = _post(b"Expect: 100-continue\r\nContent-Length: 8\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(JSON_ONE + LAST)
        answers = [r[0] for r in _parse(_read_all(sock), [])]
    assert answers == [200, 200]
    old = b"POST /invocations HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 8\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(old)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # no 100 Continue for an HTTP/1.0 client
        sock.settimeout(10)
        sock.sendall(JSON_ONE)
        assert [r[0] for r in _parse(_read_all(sock), [])] == [200]


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


POISONS = {
    "65 dimensions": npy_with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1, " * 65 + "), }", b"\0" * 4
    ),
    "element count overflow": npy_with_header(
        f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**63}, 0), }}"
    ),
    "subarray dtype": npy_with_header(
        "{'descr': '(2,)<f4', 'fortran_order': False, 'shape': (1, 2), }", b"\0" * 16
    ),
    "object dtype": npy_with_header(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1, 2), }", b"\0" * 16
    ),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_one_poisoned_request_among_eight_innocent_ones(server: Server, poison: str) -> None:
    """Together on one connection (one batch) and on nine connections at once."""
    inputs = [np.full((1, 2), i, np.float32) for i in range(8)]
    bodies = [npy(x) for x in inputs]
    bodies.insert(3, POISONS[poison])

    def request(body: bytes) -> bytes:
        return (
            b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Type: application/x-npy\r\n"
            b"Accept: application/x-npy\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )

    def check(answers: list[tuple[int, bytes]]) -> None:
        assert [a[0] for a in answers] == [200, 200, 200, 400, 200, 200, 200, 200, 200]
        assert json.loads(answers[3][1])["error"] == "bad_request"
        innocent = [from_npy(a[1]) for i, a in enumerate(answers) if i != 3]
        for x, y in zip(inputs, innocent, strict=True):
            np.testing.assert_array_equal(y[:, :2], x + 1)

    data = b"".join(request(b) for b in bodies) + LAST
    check([(r[0], r[2]) for r in _parse(_exchange(server, data), [])][:9])

    answers: list[tuple[int, bytes]] = [(0, b"")] * 9
    barrier = threading.Barrier(9)

    def client(i: int) -> None:
        conn = server.connect(timeout=10)
        barrier.wait()
        status, _, reply = server.invoke(
            bodies[i], "application/x-npy", "application/x-npy", conn=conn
        )
        answers[i] = (status, reply)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    check(answers)


# resources -------------------------------------------------------------------------------
def _worker_pid(server: Server) -> int:
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_pipelines_and_never_reads_is_bounded(server: Server) -> None:
    worker = _worker_pid(server)
    before = _rss_mb(worker)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.setblocking(False)
        burst = PING * 2000
        deadline = time.monotonic() + 3
        blocked_since = None
        while time.monotonic() < deadline:
            try:
                sent += sock.send(burst)
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 0.5:
                    break  # the server stopped reading: flow control
                time.sleep(0.01)
        assert blocked_since is not None, f"the server kept reading ({sent} bytes)"
        # meanwhile the worker serves others
        t0 = time.monotonic()
        assert server.request("GET", "/ping")[0] == 200
        assert time.monotonic() - t0 < 1
        assert _rss_mb(worker) - before < 40
    assert sent < 64 * 1024 * 1024


def test_a_huge_chunk_is_refused_as_it_arrives(server: Server) -> None:
    worker = _worker_pid(server)
    before = _rss_mb(worker)
    head = _post(b"Transfer-Encoding: chunked\r\n", b"40000000\r\n")  # one chunk of 1 GiB
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        block = b"0" * (1024 * 1024)
        sent = 0
        try:
            for _ in range(40):
                sock.sendall(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413 Payload Too Large"), reply[:200]
    assert _rss_mb(worker) - before < 40
    assert server.request("GET", "/ping")[0] == 200


def test_slow_heads_and_bodies_get_408(server: Server) -> None:
    """CHAINER_SAGEMAKER_HEADER_TIMEOUT=1: a head trickling in, then a body trickling in."""
    for first, trickle in (
        (b"GET /ping HTTP/1.1\r\n", b"X"),
        (_post(b"Content-Length: 50\r\n"), b"["),
    ):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(first)
            sock.settimeout(0.3)
            reply = b""
            while time.monotonic() - t0 < 6 and not reply:
                try:
                    sock.sendall(trickle)
                    reply = sock.recv(65536)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
        assert reply.startswith(b"HTTP/1.1 408 Request Timeout"), reply
        assert time.monotonic() - t0 < 4


def test_idle_keep_alive_connections_are_closed_after_seconds(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(PING)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        t0 = time.monotonic()
        assert sock.recv(65536) == b""  # CHAINER_SAGEMAKER_KEEPALIVE=2
        assert 1.5 < time.monotonic() - t0 < 5


def test_connection_cap_answers_503_and_says_so(server: Server) -> None:
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(24)]
    try:
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
            assert _read_all(extra).startswith(b"HTTP/1.1 503 Service Unavailable")
    finally:
        for s in socks:
            s.close()
    assert "connection cap reached" in server.log()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if server.request("GET", "/ping")[0] == 200:
            break
    else:
        raise AssertionError("the worker did not take connections again")


def test_urllib_reads_the_413_of_a_body_it_sends_whole(server: Server) -> None:
    """urllib sends `Connection: close` and the whole body before it reads: lingering close."""
    big = b"0" * (7 * 1024 * 1024)
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/invocations",
        data=big,
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=20)
    assert info.value.code == 413
    assert json.loads(info.value.read())["error"] == "payload_too_large"


def test_out_of_file_descriptors_is_logged_and_survived(
    tmp_path: Path, start_server: StartServer
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(MODEL)
    srv = start_server(code)
    worker = _worker_pid(srv)
    subprocess.run(["prlimit", f"--pid={worker}", "--nofile=48:48"], check=True)
    socks = []
    try:
        for _ in range(60):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        time.sleep(0.5)
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while "Too many open files" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "cannot accept connections" in srv.log()
    assert "Too many open files" in srv.log()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if srv.request("GET", "/ping")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        raise AssertionError("the worker did not recover")


def test_draining_closes_half_received_requests_at_once(
    tmp_path: Path, start_server: StartServer
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(MODEL)
    srv = start_server(code)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\n[[1")
        time.sleep(0.2)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert sock.recv(100) == b""  # closed, not kept until the drain deadline (65 s)
        assert srv.wait_exit(20) == 0
        assert time.monotonic() - t0 < 5


# deadlines and ordering (custom hooks, not batched) ----------------------------------------
@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("hooks")
    code = base / "code"
    code.mkdir()
    (code / "inference.py").write_text(HOOKS)
    (base / "model").mkdir()
    env = {
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1.5",
        # as a batch transform job sets them (issue 13)
        "SAGEMAKER_BATCH": "true",
        "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
    }
    srv = Server(base, code, "inference.py", env)
    srv.wait_ready()
    yield srv
    srv.stop()


def _text(body: str) -> bytes:
    raw = body.encode()
    return (
        b"POST /invocations HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % len(raw) + raw
    )


def test_each_request_has_its_own_deadline_and_is_answered_when_ready(
    hooks_server: Server,
) -> None:
    """Three pipelined requests of 0.6 s with a 1.5 s timeout: all succeed (one timer for the
    lot would fail the third); the quick first answer leaves before the slow ones finish."""
    data = _text("quick") + _text("sleep 0.6") * 3 + _text("sleep 5") + LAST
    with socket.create_connection(("127.0.0.1", hooks_server.port), timeout=20) as sock:
        t0 = time.monotonic()
        sock.sendall(data)
        first = sock.recv(65536)
        assert time.monotonic() - t0 < 0.5
        rest = _read_all(sock)
    answers = _parse(first + rest, [])
    assert [a[0] for a in answers] == [200, 200, 200, 200, 504, 200]
    assert json.loads(answers[0][2])["echo"] == "quick"


def test_ping_does_not_wait_behind_inference(hooks_server: Server) -> None:
    slow = threading.Thread(target=lambda: hooks_server.invoke("sleep 1.2", "text/plain"))
    slow.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert hooks_server.request("GET", "/ping")[0] == 200
    assert hooks_server.request("GET", "/execution-parameters")[0] == 200
    assert time.monotonic() - t0 < 0.6  # the slow request has 0.8 s or more to go
    slow.join()


def test_reflected_content_types_are_validated(hooks_server: Server) -> None:
    status, headers, _ = hooks_server.invoke("type text/plain; charset=utf-8", "text/plain")
    assert (status, headers["content-type"]) == (200, "text/plain; charset=utf-8")
    status, headers, _ = hooks_server.invoke("type text/plain\r\nSet-Cookie: a=b", "text/plain")
    assert status == 200
    assert headers["content-type"] == "application/octet-stream"
    assert "set-cookie" not in headers
    # an Accept entry that is no media type is not handed to output_fn
    _, _, body = hooks_server.invoke("x", "text/plain", "nonsense, text/csv")
    assert json.loads(body)["accept"] == "text/csv"


# the port is ours alone --------------------------------------------------------------------
def test_a_second_serve_on_the_same_port_refuses_to_start(
    tmp_path: Path, start_server: StartServer, server: Server
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(MODEL)
    second = start_server(code, env={"SAGEMAKER_BIND_TO_PORT": str(server.port)}, wait=False)
    assert second.wait_exit(30) == 4
    assert f"another serve is already running on port {server.port}" in second.log()
    assert server.request("GET", "/ping")[0] == 200

    with socket.socket() as other:  # any other listener, even one sharing with SO_REUSEPORT
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        third = start_server(code, env={"SAGEMAKER_BIND_TO_PORT": str(port)}, wait=False)
        assert third.wait_exit(30) == 4
        assert f"port {port} on 127.0.0.1 is in use by another process" in third.log()


def test_shape_mismatch_names_the_expected_shape(server: Server) -> None:
    assert server.invoke(b"[[1, 2]]", "application/json")[0] == 200  # (N, 2) works
    status, _, body = server.invoke(b"[[1, 2, 3]]", "application/json")
    assert status == 400
    assert "(N, 2)" in json.loads(body)["message"]


def test_execution_parameters_follow_the_transform_job(hooks_server: Server) -> None:
    status, headers, body = hooks_server.request("GET", "/execution-parameters")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 2,
    }
