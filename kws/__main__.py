"""`python -m kws` is the `kws` command line."""
import sys

from kws.cli import main

sys.exit(main())
