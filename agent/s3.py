"""Reading config-like objects from S3 (config, rules, the LiteLLM catalog).

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, which is how tests point it at
moto's server and how users point it at a VPC endpoint. Calls are blocking: callers on
the event loop run them in an executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from agent.configtypes import ConfigError


@dataclass(frozen=True)
class S3Object:
    text: str
    etag: str


def split_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError("", f"expected an s3://bucket/key URL, got {url!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _client():
    import boto3

    return boto3.client("s3")


def read_s3_object(url: str, if_none_match: str | None = None) -> S3Object | None:
    """Fetch an object; returns None when `if_none_match` equals the current ETag."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3_url(url)
    kwargs = {"Bucket": bucket, "Key": key}
    if if_none_match:
        kwargs["IfNoneMatch"] = if_none_match
    try:
        response = _client().get_object(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "304" or status == 304 or code == "NotModified":
            return None
        raise ConfigError("", f"cannot read from S3: {code or exc}", url) from None
    except BotoCoreError as exc:
        raise ConfigError("", f"cannot read from S3: {exc}", url) from None
    body = response["Body"].read().decode("utf-8")
    return S3Object(text=body, etag=response.get("ETag", "").strip('"'))


def read_s3_text(url: str) -> str:
    obj = read_s3_object(url)
    assert obj is not None
    return obj.text


def list_s3_keys(url: str, suffixes: tuple[str, ...] = (".yml", ".yaml")) -> list[str]:
    """List s3:// URLs under a prefix (for `rules:` entries that name a folder)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(url)
    keys: list[str] = []
    try:
        paginator = _client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith(suffixes):
                    keys.append(f"s3://{bucket}/{item['Key']}")
    except (ClientError, BotoCoreError) as exc:
        raise ConfigError("", f"cannot list S3 prefix: {exc}", url) from None
    return sorted(keys)


def list_s3_objects(url: str, suffixes: tuple[str, ...] = (".yml", ".yaml")) -> list[tuple[str, str]]:
    """(s3:// URL, ETag) of every object under a prefix, or of the one key `url` names.

    One LIST call answers "did anything under this prefix change?" without a GET per file,
    which is how the refresher watches rule folders cheaply.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(url)
    exact = prefix.endswith(suffixes)
    found: list[tuple[str, str]] = []
    try:
        paginator = _client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if (key == prefix) if exact else key.endswith(suffixes):
                    found.append((f"s3://{bucket}/{key}", str(item.get("ETag", "")).strip('"')))
    except (ClientError, BotoCoreError) as exc:
        raise ConfigError("", f"cannot list S3 prefix: {exc}", url) from None
    return sorted(found)
