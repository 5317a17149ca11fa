"""``python -m towerkit`` (and ``torchrun -m towerkit``) runs the ``towerkit`` command."""

from towerkit.cli import main

main()
