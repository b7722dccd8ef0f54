"""Create the bucket S3_BUCKET at MLFLOW_S3_ENDPOINT_URL unless it exists (MinIO starts without buckets).

Runs in the MLflow pod before the server; waits up to five minutes for the store to answer.
"""

import os
import time

import boto3

bucket = os.environ["S3_BUCKET"]
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for attempt in range(60):
    try:
        if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=bucket)
            print(f"created bucket {bucket}", flush=True)
        break
    except Exception as err:  # the store is not up yet
        print(f"waiting for the S3 store: {err}", flush=True)
        time.sleep(5)
else:
    raise SystemExit(f"the S3 store at {os.environ['MLFLOW_S3_ENDPOINT_URL']} did not become reachable")
