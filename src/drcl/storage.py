"""The S3 bucket behind the DVC remote: check that it answers, and create it when asked.

DVC cannot push to a bucket that does not exist, and its errors on bad credentials are long.
This check says in one line what is wrong. Endpoint and credentials come from the environment
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), as DVC and boto3 read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from drcl.errors import DrclError

DENIED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
          "InvalidClientTokenId", "ExpiredToken"}
MISSING = {"NoSuchBucket", "404", "NotFound"}


@dataclass(frozen=True)
class BucketStatus:
    bucket: str
    endpoint: str
    created: bool


def parse_bucket(name: str) -> str:
    """The bucket of ``name`` or of an ``s3://bucket/prefix`` URL (as in a DVC remote)."""
    bucket = name.removeprefix("s3://").split("/", 1)[0]
    if not 3 <= len(bucket) <= 63:
        raise DrclError(f"--bucket: {name!r} does not name a bucket (3 to 63 characters)")
    return bucket


def check_bucket(name: str, *, create: bool = False, endpoint_url: str | None = None,
                 timeout: float = 10.0) -> BucketStatus:
    """Check that the bucket exists and the credentials may list it; create it if ``create``."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        ParamValidationError,
    )

    bucket = parse_bucket(name)
    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"max_attempts": 1, "mode": "standard"})
    client = boto3.client("s3", endpoint_url=endpoint_url, config=config)
    endpoint = client.meta.endpoint_url
    created = False
    try:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) not in MISSING or not create:
                raise
            client.create_bucket(Bucket=bucket)
            created = True
        client.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except EndpointConnectionError:
        raise DrclError(f"S3 endpoint {endpoint} is unreachable (is the server up, and "
                        "AWS_ENDPOINT_URL right?)") from None
    except NoCredentialsError:
        raise DrclError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                        "(or an AWS profile)") from None
    except ParamValidationError as exc:
        raise DrclError(f"--bucket: {bucket!r} is not a valid bucket name ({exc})") from None
    except ClientError as exc:
        code = _code(exc)
        if code in DENIED:
            raise DrclError(f"S3 at {endpoint} refused the credentials for bucket {bucket!r} "
                            f"({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") \
                from None
        if code in MISSING:
            raise DrclError(f"bucket {bucket!r} does not exist at {endpoint}; create it with "
                            "--create") from None
        raise DrclError(f"S3 at {endpoint}, bucket {bucket!r}: {code} "
                        f"({exc.response.get('Error', {}).get('Message', '')})") from None
    return BucketStatus(bucket=bucket, endpoint=endpoint, created=created)


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
