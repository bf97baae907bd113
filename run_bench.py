"""Same as the ``bibench`` command: ``python run_bench.py run --config configs/default.yml``."""

import sys

from bibench.cli import main

if __name__ == "__main__":
    sys.exit(main())
