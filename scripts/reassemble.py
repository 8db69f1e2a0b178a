#!/usr/bin/env python3
"""Reads auditrail topics from their beginning and prints each record once, reassembled.

A reference consumer for auditrail's chunk protocol (README, "Records larger than a topic
takes"): a record larger than its topic's max.message.bytes arrives as several messages with
the headers chunk_index, chunk_count and chunk_sha256 besides the usual id; they are joined
by index and the SHA-256 of the whole is checked. Duplicates (of whole records, or of chunks:
a record is sent again whole when one chunk failed) are dropped by id.

Prints one JSON object per record on stdout: {"id", "topic", "chunks", "largest", "value"}:
how many messages it came in, the size of the largest, and the record's envelope as JSON. Exits non-zero when a chunked record is incomplete
or its checksum does not match at the end.

    scripts/reassemble.py --bootstrap 127.0.0.1:9092 --topic audit-60d --topic audit-forever \
        --want 100 --timeout 60

Needs the confluent-kafka package (`pip install confluent-kafka`).
"""

import argparse
import hashlib
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--want", type=int, default=0, help="stop once this many records are whole")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait at most")
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"reassemble-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    partitions = []
    deadline = time.monotonic() + args.timeout
    for topic in args.topic:
        while True:
            metadata = consumer.list_topics(topic, timeout=5)
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                partitions += [TopicPartition(topic, p, 0) for p in found.partitions]
                break
            if time.monotonic() > deadline:
                print(f"topic {topic} not found", file=sys.stderr)
                return 2
            time.sleep(0.2)
    consumer.assign(partitions)

    done = {}  # id -> printed record
    # (id, chunk_size) -> {"count", "sha256", "chunks": {index: bytes}, "topic"}: one
    # attempt's cut; an attempt in other sizes (after the broker refused one) is another.
    pending = {}
    while time.monotonic() < deadline and (args.want == 0 or len(done) < args.want):
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                print(f"consumer: {message.error()}", file=sys.stderr)
            continue
        headers = {k: (v or b"").decode() for k, v in (message.headers() or [])}
        record_id = headers.get("id")
        if record_id is None or record_id in done:
            continue
        if "chunk_count" not in headers:
            value = message.value()
            done[record_id] = emit(record_id, message.topic(), 1, len(value), value)
            continue
        attempt = (record_id, headers.get("chunk_size", headers["chunk_count"]))
        entry = pending.setdefault(
            attempt,
            {
                "count": int(headers["chunk_count"]),
                "sha256": headers["chunk_sha256"],
                "chunks": {},
                "topic": message.topic(),
            },
        )
        entry["chunks"][int(headers["chunk_index"])] = message.value()
        if len(entry["chunks"]) == entry["count"]:
            whole = b"".join(entry["chunks"][i] for i in range(entry["count"]))
            if hashlib.sha256(whole).hexdigest() != entry["sha256"]:
                print(f"record {record_id}: SHA-256 mismatch", file=sys.stderr)
                return 1
            for other in [a for a in pending if a[0] == record_id]:
                del pending[other]
            largest = max(len(c) for c in entry["chunks"].values())
            done[record_id] = emit(record_id, entry["topic"], entry["count"], largest, whole)
    consumer.close()
    if pending:
        for (record_id, _), entry in pending.items():
            print(
                f"record {record_id}: {len(entry['chunks'])} of {entry['count']} chunks",
                file=sys.stderr,
            )
        return 1
    return 0


def emit(record_id: str, topic: str, chunks: int, largest: int, value: bytes) -> bool:
    record = {"id": record_id, "topic": topic, "chunks": chunks, "largest": largest}
    record["value"] = json.loads(value)
    print(json.dumps(record), flush=True)
    return True


if __name__ == "__main__":
    sys.exit(main())
