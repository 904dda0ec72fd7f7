"""Writes a record batch no client would write, with a Produce request of our own (every real client
checks what it sends): a batch whose records do not decompress, or do not parse. The broker stores the
batch as it comes (the dev broker only refuses a codec it does not know), so consumers meet it as they
would meet a batch corrupted on disk or in transit."""

from __future__ import annotations

import socket
import struct
import time

#: Attributes bits 0-2 hold the codec.
CODEC_NONE = 0
CODEC_GZIP = 1
CODEC_ZSTD = 4


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def record_batch(codec: int, records: int, payload: bytes) -> bytes:
    """A v2 record batch claiming ``records`` records compressed with ``codec``, holding ``payload``
    (with a correct CRC: the batch is well framed, only its contents cannot be read)."""
    now = int(time.time() * 1000)
    # attributes, last offset delta, first/max timestamp, producer id/epoch, base sequence, record count
    after_crc = struct.pack(">hiqqqhii", codec, records - 1, now, now, -1, -1, -1, records) + payload
    # partition leader epoch, magic 2, CRC-32C of everything after it
    body = struct.pack(">ibI", 0, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(body)) + body


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def produce_batch(bootstrap: str, topic: str, partition: int, batch: bytes) -> int:
    """Sends ``batch`` to ``topic[partition]`` with a Produce v3 request (acks=-1); returns its base
    offset. ``bootstrap`` must be the partition's leader (a single-broker cluster)."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    # header v1: api key 0 (Produce), version 3, correlation id, client id
    request = struct.pack(">hhi", 0, 3, 1) + _string("ecomlogs-tests")
    # transactional id (null), acks, timeout, one topic with one partition and its records
    request += struct.pack(">hhi", -1, -1, 10_000) + struct.pack(">i", 1) + _string(topic)
    request += struct.pack(">iii", 1, partition, len(batch)) + batch
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv(sock, 4))
        answer = _recv(sock, size)
    # correlation id, 1 topic, its name, 1 partition: index, error code, base offset
    at = 4 + 4
    (name_len,) = struct.unpack_from(">h", answer, at)
    at += 2 + name_len + 4
    _index, error, base_offset = struct.unpack_from(">ihq", answer, at)
    if error:
        raise RuntimeError(f"the broker refused the batch: Kafka error code {error}")
    return int(base_offset)
