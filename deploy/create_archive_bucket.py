"""Create the bucket named by ARCHIVE_URL; the compose stack runs this once before the receiver starts.

The stack's S3 server starts empty, and the receiver's readiness check (head-bucket) fails until the
bucket exists. Creating it through the S3 API, with the project's own archive client, works with any
S3-compatible server and needs no server-specific tool. Running it again is harmless.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError, ClientError

from segment_elt.ingest.archive import open_archive

ALREADY_THERE = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


def create_archive_bucket(archive_url: str) -> str:
    """Create the archive's bucket unless it exists; returns the bucket name."""
    if urlparse(archive_url).scheme != "s3":
        raise ValueError(f"ARCHIVE_URL {archive_url!r}: only an s3:// archive has a bucket to create")
    archive = open_archive(archive_url)
    try:
        archive.client.create_bucket(Bucket=archive.bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ALREADY_THERE:
            raise
    archive.check()
    return archive.bucket


def main() -> None:
    try:
        bucket = create_archive_bucket(os.environ.get("ARCHIVE_URL", ""))
    except (ValueError, BotoCoreError, ClientError) as exc:
        sys.exit(f"create_archive_bucket: {exc}")
    print(f"archive bucket {bucket} is ready")


if __name__ == "__main__":
    main()
