"""The `voltui` subcommands, one module per command (or per pair of close commands).

`voltui.cli` builds the argument parser and imports a command's module only once it knows which
command runs, so `voltui --help` and argument mistakes never pay for Rich, pydantic-settings, the
engine or the server. Modules here may import anything; `voltui.cli` and `argtypes` may not.

A handler is `cmd_NAME(args, console)` (or `cmd_NAME(args)` for commands that print no Rich
output) returning an exit code, or a coroutine that does; `voltui.cli` runs coroutines with
`asyncio.run`. Adding a command: write its module, then add one `Command` entry in `voltui.cli`.
"""
