"""`python -m mutate.client`: the same as the `mutate` command."""

import sys

from mutate.client.cli import main

sys.exit(main())
