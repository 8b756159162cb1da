"""Python client of the Mutate public API, and the `mutate` command line.

```python
from mutate.client import MutateClient

with MutateClient("127.0.0.1:50051", api_key) as client:
    job = client.submit("report.xlsx", configuration_id="cfg_…")
    job = client.wait(job.id)
    client.download(job.id, "report.csv")
```
"""

from mutate.client._client import (
    DEFAULT_ADDRESS,
    TERMINAL_STATUSES,
    ClientState,
    MutateClient,
    WaitTimeout,
)
from mutate.client._config_file import load_configuration, parse_configuration
from mutate.client._errors import (
    ApiError,
    AuthError,
    ClientError,
    ConfigurationFileError,
    NotFoundError,
    TransferError,
    UnavailableError,
    UsageError,
)
from mutate.client._retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_RETRY",
    "NO_RETRY",
    "TERMINAL_STATUSES",
    "ApiError",
    "AuthError",
    "ClientError",
    "ClientState",
    "ConfigurationFileError",
    "MutateClient",
    "NotFoundError",
    "RetryPolicy",
    "TransferError",
    "UnavailableError",
    "UsageError",
    "WaitTimeout",
    "load_configuration",
    "parse_configuration",
]
