"""python -m server: the fovea command (also how torchrun starts distributed runs)."""

from server.cli import main

main()
