"""`python -m lab.refserver`: run the reference diffusion server."""

import sys

from lab.refserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
