"""One module per ``printnode`` subcommand group; each has ``register(subparsers)``.

A module's ``register`` adds its parser(s) and sets ``func`` (taking the parsed
``argparse.Namespace`` and returning an exit code).  Heavy imports (pvlib,
matplotlib, the hub) happen inside ``func``, never at module import, so
``printnode status`` stays fast on a Pi Zero.
"""

#: modules under node.commands, in the order ``printnode --help`` lists them
COMMAND_MODULES = [
    "run",
    "control",
    "configcheck",
    "settings",
    "virtual",
    "analyze",
    "telemetry",
    "plan",
    "simulate",
    "doctor",
    "web",
    "print",
    "hub",
]
