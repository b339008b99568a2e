"""`python -m ipguard_fast ...` is the `ipguard` command."""
import sys

from .cli import main

sys.exit(main())
