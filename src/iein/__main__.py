"""``python -m iein``: the ``iein`` command, also as torchrun's module
(``torchrun --nproc-per-node 2 -m iein train ...``, see :mod:`iein.training.distributed`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
