"""The command lines: what a user runs, and nothing the library needs.

`main.py` (the `transformer` command: picks the subcommand), one module per subcommand with its
options, messages and exit codes: `train.py`, `translate.py`, `serve.py`, `prepare.py`,
`average.py`, `convert.py`, `export.py`, `recipes.py`, `config.py`; and `common.py` (the exit codes
and the options several subcommands share). The library below raises typed errors; only this
folder turns them into one line on stderr and an exit code. train.py, translate.py and serve.py at
the repository root are shims onto the modules of the same names.
"""
