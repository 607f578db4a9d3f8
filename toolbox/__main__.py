"""python -m toolbox: the same as the toolbox command."""

from .cli import main

main()
