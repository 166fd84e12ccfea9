"""``python -m imc_grapes.sweep SPEC.toml [options]`` (same as ``imc-grapes sweep``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
