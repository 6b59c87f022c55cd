"""Reads a whole Kinesis stream back and deaggregates it with AWS's own KPL deaggregator
(aws-kinesis-agg): the tests' independent check that aggregated records deaggregate into exactly
the lines written, and that no user record hashes outside the shard it was read from.

Usage: deaggregate.py ENDPOINT_URL STREAM_NAME (run by the peers' venv python, scripts/peers)

Prints one JSON object: {"shards": N, "kinesis_records": N, "aggregated": N, "user_records":
[{"shard", "data" (base64), "partition_key"}, ...] in shard order then read order,
"outside_range": N}. On any error prints a one-line reason to stderr and exits 1.
"""

import base64
import hashlib
import json
import sys

import boto3
from aws_kinesis_agg import DIGEST_SIZE, MAGIC
# The deaggregator module puts the package's folder on sys.path, which its messages_pb2 needs.
from aws_kinesis_agg.deaggregator import iter_deaggregate_records, messages_pb2

# A shard is read to its end after this many empty answers in a row at the tip of the stream
# (Kinesis may answer empty before then); MAX_CALLS bounds the reads of one shard.
EMPTY_AT_TIP = 3
MAX_CALLS = 10000


def list_shards(kinesis, stream):
    page = kinesis.list_shards(StreamName=stream)
    shards = page["Shards"]
    while page.get("NextToken"):
        page = kinesis.list_shards(NextToken=page["NextToken"])
        shards += page["Shards"]
    return shards


def read_shard(kinesis, stream, shard_id):
    """Every record of the shard from TRIM_HORIZON, in order."""
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records, empty = [], 0
    for _ in range(MAX_CALLS):
        page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        records += page["Records"]
        at_tip = not page["Records"] and page.get("MillisBehindLatest", 0) == 0
        empty = empty + 1 if at_tip else 0
        iterator = page.get("NextShardIterator")
        if not iterator or empty == EMPTY_AT_TIP:
            return records
    raise RuntimeError(f"{shard_id} not read to its end in {MAX_CALLS} GetRecords calls")


def lambda_event(record):
    """A GetRecords record as Lambda delivers it, the form the deaggregator reads."""
    return {
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "data": base64.b64encode(record["Data"]).decode(),
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
        },
    }


def explicit_hash_keys(data):
    """The explicit hash key of each user record of an aggregate, None where it has none.

    The deaggregator's own explicitHashKey cannot be used: it reads an unset
    explicit_hash_key_index as 0, giving a record without one the table's first key."""
    aggregate = messages_pb2.AggregatedRecord()
    aggregate.ParseFromString(data[len(MAGIC):-DIGEST_SIZE])
    table = aggregate.explicit_hash_key_table
    return [table[r.explicit_hash_key_index] if r.HasField("explicit_hash_key_index") else None
            for r in aggregate.records]


def hash_key(partition_key, explicit_hash_key):
    """The hash key Kinesis routes by: the explicit one, else the partition key's MD5."""
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


def main(endpoint_url, stream):
    kinesis = boto3.client("kinesis", region_name="us-east-1", endpoint_url=endpoint_url)
    shards = list_shards(kinesis, stream)
    out = {"shards": len(shards), "kinesis_records": 0, "aggregated": 0, "user_records": []}
    outside = 0
    for shard in shards:
        records = read_shard(kinesis, stream, shard["ShardId"])
        out["kinesis_records"] += len(records)
        out["aggregated"] += sum(r["Data"].startswith(MAGIC) for r in records)
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        for record in records:
            users = [u["kinesis"] for u in iter_deaggregate_records(lambda_event(record))]
            explicit = [None] * len(users)
            if users and users[0].get("aggregated"):
                explicit = explicit_hash_keys(record["Data"])
                if len(explicit) != len(users):  # the deaggregator only logs a bad aggregate
                    raise ValueError(f"record {record['SequenceNumber']} deaggregated into "
                                     f"{len(users)} of its {len(explicit)} user records")
            for user, explicit_hash_key in zip(users, explicit):
                data = user["data"]  # base64: str for a plain record, bytes for a user record
                out["user_records"].append({
                    "shard": shard["ShardId"],
                    "data": data.decode() if isinstance(data, bytes) else data,
                    "partition_key": user["partitionKey"],
                })
                outside += not low <= hash_key(user["partitionKey"], explicit_hash_key) <= high
    out["outside_range"] = outside
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        if len(sys.argv) != 3:
            raise ValueError("usage: deaggregate.py ENDPOINT_URL STREAM_NAME")
        main(sys.argv[1], sys.argv[2])
    except Exception as e:
        print(f"deaggregate.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
