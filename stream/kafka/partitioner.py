"""The Java client's default partitioner (murmur2 of the key), the one faust's producer (aiokafka) and the
workers' confluent producers (``partitioner: murmur2_random``) use: where a keyed record lands.

Example
-------
>>> partition_for(b"item-42", 4), partition_for(b"", 4)
(2, 1)
"""
from __future__ import annotations

_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """32-bit murmur2 of ``data`` with the Kafka seed (as the Java client computes it, unsigned)."""
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
