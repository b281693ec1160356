"""`python -m robolearn VERB ...`: the same command as `robolearn`, in the form torchrun starts
(`torchrun --nproc_per_node=N -m robolearn train ...`)."""
import sys

from robolearn.cli import main

if __name__ == "__main__":
    sys.exit(main())
