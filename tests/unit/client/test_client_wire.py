"""The HTTP/1.1 bytes: what is sent, and how every framing of an answer is read."""

from __future__ import annotations

from urllib.parse import quote as std_quote

import pytest

from cilium_py.client.wire import (
    Reader,
    body_pieces,
    build_request,
    parse_response,
    quote,
    read_head,
    with_query,
)


def test_request_bytes() -> None:
    raw = build_request("PUT", "/v1/endpoint/c1-eth0", b'{"netns": "/x"}')
    head, body = raw.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "PUT /v1/endpoint/c1-eth0 HTTP/1.1"
    assert "Connection: close" in lines and "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert body == b'{"netns": "/x"}'
    assert b"Content-Length" not in build_request("GET", "/v1/endpoint")
    assert b"Content-Length" not in build_request("DELETE", "/v1/endpoint/x")
    assert b"Content-Length: 0" in build_request("POST", "/v1/x")
    assert b"Connection: keep-alive" in build_request("GET", "/", keep_alive=True)


@pytest.mark.parametrize("text", ["plain", "a b/c", "fd10::1", "x?y&z=1", "\u00e9t\u00e9", "~._-"])
def test_quote_is_urllibs(text: str) -> None:
    assert quote(text) == std_quote(text, safe="")
    assert quote(text, safe="/") == std_quote(text, safe="/")


def test_query() -> None:
    assert with_query("/v1/policy", None) == "/v1/policy"
    assert with_query("/v1/policy", {"labels": "unspec:a=b c", "x": None}) == \
        "/v1/policy?labels=unspec%3Aa%3Db%20c"


def test_parse_content_length_chunked_and_close_delimited() -> None:
    head, body = parse_response(b'HTTP/1.1 201 CREATED\r\nContent-Length: 9\r\n\r\n{"a": 1}\nEXTRA')
    assert (head.status, head.phrase, body) == (201, "CREATED", b'{"a": 1}\n')
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n4;ext=1\r\n: 2}\r\n0\r\n\r\n")
    assert parse_response(chunked)[1] == b'{"a": 2}'
    assert parse_response(b"HTTP/1.0 200 OK\r\n\r\n[1, 2]")[1] == b"[1, 2]"
    assert parse_response(b"HTTP/1.1 204 NO CONTENT\r\n\r\n")[1] == b""
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "HEAD")[1] == b""


@pytest.mark.parametrize("raw", [b"garbage", b"HTTP/1.1 abc\r\n\r\n", b"",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}",
                                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
def test_malformed_responses_raise(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(raw)


def test_keep_alive_needs_framing() -> None:
    def head(raw: bytes):  # noqa: ANN202
        data = [raw]
        return read_head(Reader(lambda _n: data.pop() if data else b""))

    assert head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").keeps_alive()
    assert head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").keeps_alive()
    assert not head(b"HTTP/1.1 200 OK\r\n\r\n").keeps_alive()  # read to close
    assert not head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n") \
        .keeps_alive()
    assert not head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keeps_alive()


def test_chunks_arrive_in_pieces_as_sent() -> None:
    """A streamed body split anywhere by the socket still yields its chunks whole."""
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6\r\nline1\n\r\n1\r\n\n\r\n0\r\n\r\n")
    pieces = [raw[i:i + 3] for i in range(0, len(raw), 3)][::-1]
    reader = Reader(lambda _n: pieces.pop() if pieces else b"")
    head = read_head(reader)
    assert head is not None
    assert list(body_pieces(reader, head, "GET")) == [b"line1\n", b"\n"]


def test_list_values_repeat_their_key() -> None:
    # `policy trace --kafka-topic A --kafka-topic B` sends the key once per value, as
    # requests did; the agent reads them with getlist.
    assert with_query("/v1/policy/resolve", {"kafka-topic": ["a b", "c"], "x": None,
                                                  "dport": 80}) == \
        "/v1/policy/resolve?kafka-topic=a%20b&kafka-topic=c&dport=80"
    assert with_query("/p", {"t": []}) == "/p"
