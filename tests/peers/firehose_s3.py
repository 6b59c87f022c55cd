"""Sets up a Firehose delivery stream into an S3 bucket in moto, and reads the bucket back: the
tests' independent check that the lines written arrive in S3, one per line.

Usage (run by the peers' venv python, scripts/peers):
  firehose_s3.py ENDPOINT_URL create DELIVERY_STREAM BUCKET
      creates BUCKET, and DELIVERY_STREAM (Direct PUT) writing into it; prints {}
  firehose_s3.py ENDPOINT_URL read BUCKET
      prints {"objects": [base64 of each object's bytes, in key order]}

On any error prints a one-line reason to stderr and exits 1.
"""

import base64
import json
import sys

import boto3


def client(service, url):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1")


def create(url, delivery_stream, bucket):
    client("s3", url).create_bucket(Bucket=bucket)
    client("firehose", url).create_delivery_stream(
        DeliveryStreamName=delivery_stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose-writer",
            "BucketARN": "arn:aws:s3:::" + bucket,
            "Prefix": "lines/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        },
    )
    return {}


def read(url, bucket):
    s3 = client("s3", url)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    objects = []
    for key in sorted(keys):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        objects.append(base64.b64encode(body).decode("ascii"))
    return {"objects": objects}


def main():
    url, action, *args = sys.argv[1:]
    if action == "create":
        out = create(url, *args)
    elif action == "read":
        out = read(url, *args)
    else:
        raise ValueError("unknown action " + action)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line, whatever went wrong
        print(f"firehose_s3.py: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
