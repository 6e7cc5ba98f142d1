"""Where documents come from: a folder inside the plane, or an ``s3://`` prefix (boto3).

Correctness rules: a listing is sorted by URI and holds only files whose suffix has a reader; the URI
(``file:///abs/path`` or ``s3://bucket/key``) is a document's identity, so a moved file is a delete and
an add; the relative path (to the folder or prefix) is what path link rules match; credentials come from
the plane's environment (the boto3 chain), never from the job spec.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import boto3
from pydantic import BaseModel, Field

from hybrid_dagster.documents.errors import DocumentError
from hybrid_dagster.documents.model import media_type_of


@dataclass(frozen=True)
class SourceFile:
    """One file of a source listing.

    Example:
        >>> SourceFile("file:///srv/docs/a.pdf", "a.pdf", "application/pdf", 1024, None)
    """

    uri: str
    relative_path: str
    media_type: str
    size: int
    modified_at: datetime | None
    metadata: Mapping[str, str] = field(default_factory=dict)


class DocumentSource(ABC):
    """Lists the files under a root and reads their bytes."""

    @abstractmethod
    def list(self) -> Iterator[SourceFile]:
        """The files with a reader, sorted by URI."""

    @abstractmethod
    def read(self, file: SourceFile) -> tuple[bytes, Mapping[str, str]]:
        """The file's bytes and its source metadata (S3 user metadata; none for local files)."""

    @property
    @abstractmethod
    def root_uri(self) -> str:
        """The folder or prefix, as a URI (for metadata and errors)."""


class LocalFolderSource(DocumentSource):
    """Files under a folder of the plane's filesystem, recursively.

    Example:
        >>> files = list(LocalFolderSource(Path("/srv/eu/documents")).list())
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def list(self) -> Iterator[SourceFile]:
        if not self.root.is_dir():
            raise DocumentError(f"document folder {self.root} does not exist in this plane")
        found: list[SourceFile] = []
        for directory, _, names in os.walk(self.root):
            for name in names:
                media_type = media_type_of(name)
                if media_type is None or name.startswith("."):
                    continue
                path = Path(directory, name)
                stat = path.stat()
                found.append(
                    SourceFile(
                        uri=path.as_uri(),
                        relative_path=path.relative_to(self.root).as_posix(),
                        media_type=media_type,
                        size=stat.st_size,
                        modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                    )
                )
        yield from sorted(found, key=lambda f: f.uri)

    def read(self, file: SourceFile) -> tuple[bytes, Mapping[str, str]]:
        return Path(urlparse(file.uri).path).read_bytes(), {}


class S3PrefixSource(DocumentSource):
    """Objects under an ``s3://bucket/prefix``, through boto3 (endpoint configurable, e.g. MinIO, moto).

    Example:
        >>> source = S3PrefixSource("s3://eu-docs/letters/", endpoint_url="http://127.0.0.1:9000")
    """

    def __init__(self, uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise DocumentError(f"document source {uri!r} is not an s3://bucket/prefix URI")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def list(self) -> Iterator[SourceFile]:
        found: list[SourceFile] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key: str = item["Key"]
                media_type = media_type_of(key)
                if media_type is None or key.endswith("/"):
                    continue
                modified = item.get("LastModified")
                found.append(
                    SourceFile(
                        uri=f"s3://{self.bucket}/{key}",
                        relative_path=key[len(self.prefix) :].lstrip("/"),
                        media_type=media_type,
                        size=int(item.get("Size", 0)),
                        modified_at=modified.astimezone(UTC) if modified is not None else None,
                    )
                )
        yield from sorted(found, key=lambda f: f.uri)

    def read(self, file: SourceFile) -> tuple[bytes, Mapping[str, str]]:
        key = file.uri[len(f"s3://{self.bucket}/") :]
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        return response["Body"].read(), dict(response.get("Metadata") or {})


class LocalFolderConfig(BaseModel):
    """A folder inside the plane (a path on the machine or pod that runs the ingest).

    Example:
        >>> LocalFolderConfig(path="/srv/eu/documents")
    """

    kind: Literal["folder"] = "folder"
    path: str = Field(description="Absolute path of the folder in the plane; read recursively.")

    def build(self) -> DocumentSource:
        return LocalFolderSource(Path(self.path))


class S3PrefixConfig(BaseModel):
    """An ``s3://bucket/prefix``; credentials come from the plane's environment (boto3's chain).

    Example:
        >>> S3PrefixConfig(uri="s3://eu-docs/letters/", endpoint_url="http://127.0.0.1:9000")
    """

    kind: Literal["s3"] = "s3"
    uri: str = Field(description="s3://bucket/prefix; every object below it is a candidate.")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, moto); AWS if unset.")
    region: str | None = Field(default=None, description="Region of the bucket (default: boto3's).")

    def build(self) -> DocumentSource:
        return S3PrefixSource(self.uri, endpoint_url=self.endpoint_url, region=self.region)


AnyDocumentSource = Annotated[LocalFolderConfig | S3PrefixConfig, Field(discriminator="kind")]
"""A source configuration, told apart by ``kind`` (``folder`` or ``s3``)."""
