"""The command-line entry points, run as ``python -m vit16 COMMAND`` (:mod:`vit16.__main__`).

Each module has ``main(argv) -> exit code``; bad input is one ``error:`` line
on stderr and exit code 2 (:mod:`vit16.commands.common`).
"""
