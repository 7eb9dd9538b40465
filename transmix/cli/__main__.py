"""``python -m transmix.cli``: what ``torchrun`` starts once per process."""

import sys

from transmix.cli.commands import main

sys.exit(main())
