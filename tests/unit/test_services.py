"""The S3 test server is real: it checks signatures and keeps objects."""

import boto3
import pytest
from botocore.exceptions import ClientError


def test_seaweedfs_round_trip_and_rejects_bad_credentials(s3_server):
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint,
                      aws_access_key_id=s3_server.access_key,
                      aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    s3.create_bucket(Bucket="probe-bucket")
    s3.put_object(Bucket="probe-bucket", Key="a.txt", Body=b"hello")
    assert s3.get_object(Bucket="probe-bucket", Key="a.txt")["Body"].read() == b"hello"
    wrong = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id="nobody",
                         aws_secret_access_key="wrong", region_name="us-east-1")
    with pytest.raises(ClientError):
        wrong.list_objects_v2(Bucket="probe-bucket")
