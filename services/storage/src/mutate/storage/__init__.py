"""Mutate storage service: S3, Cloudflare R2 and MinIO behind one gRPC API."""

from mutate.storage._store import S3Store, StoredObject
from mutate.storage.settings import ProviderConfig, StorageSettings

__all__ = ["ProviderConfig", "S3Store", "StorageSettings", "StoredObject"]
