"""deploy/create_archive_bucket.py, the compose stack's one-shot bucket step, run as compose runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "deploy/create_archive_bucket.py"


def _run(archive_url: str, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ARCHIVE_URL": archive_url, "AWS_ENDPOINT_URL": endpoint}
    command = [sys.executable, SCRIPT]
    return subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_creates_the_bucket_and_a_second_run_is_harmless(moto_s3):
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    for _ in range(2):
        done = _run(f"s3://{bucket}/raw", moto_s3.endpoint)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"archive bucket {bucket} is ready"
    s3 = boto3.client("s3", endpoint_url=moto_s3.endpoint)
    assert bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_an_archive_without_a_bucket_is_one_line(moto_s3, tmp_path):
    done = _run(tmp_path.as_uri(), moto_s3.endpoint)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"create_archive_bucket: ARCHIVE_URL {tmp_path.as_uri()!r}: only an s3:// archive has a bucket to create"
    ]
