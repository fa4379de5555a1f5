"""stream/kafka/partitioner.py places a key where the Java client, aiokafka (faust) and librdkafka's murmur2 do."""
from __future__ import annotations

import random

from stream.kafka.partitioner import partition_for


def test_same_partition_as_aiokafka_for_any_key_and_count():
    from aiokafka.partitioner import DefaultPartitioner

    rng = random.Random(7)
    aio = DefaultPartitioner()
    for n in (1, 2, 3, 4, 7, 12, 100):
        every = list(range(n))
        for size in range(0, 40):
            key = bytes(rng.randrange(256) for _ in range(size))
            assert partition_for(key, n) == aio(key, every, every), (key, n)


def test_known_values_of_the_java_client():
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2)
    from stream.kafka.partitioner import murmur2

    def signed(x: int) -> int:
        return x - (1 << 32) if x >= 1 << 31 else x

    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
               b"abc": 479470107}
    for key, expected in vectors.items():
        assert signed(murmur2(key)) == expected, key
