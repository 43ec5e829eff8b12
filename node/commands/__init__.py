"""One module per ``printnode`` subcommand group; each has ``register(subparsers)``.

A module's ``register`` adds its parser(s) and sets ``func`` (taking the parsed
``argparse.Namespace`` and returning an exit code).  The CLI imports only the module of the
command being run (:data:`COMMANDS` maps each command to its module and its ``--help`` line),
and heavy imports (pydantic's config, pvlib, matplotlib, the hub) happen inside ``func``, so
``printnode status`` stays fast on a Pi Zero (issue #19; tests/test_cli.py keeps the table true).
"""

#: every command, in the order ``printnode --help`` lists them: (module under node.commands, help line)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the node daemon"),
    "status": ("control", "what the node is doing"),
    "queue": ("control", "add, list or cancel queued jobs"),
    "pause": ("control", "pause the current (or given) job"),
    "resume": ("control", "resume a paused job"),
    "cancel": ("control", "cancel the current (or given) job"),
    "job": ("control", "one job with its full transition history"),
    "plate-cleared": ("control", "confirm the build plate is empty"),
    "check-config": ("configcheck", "validate a config file; name each bad key and why"),
    "config": ("settings", "show the effective config, or set a run-time override"),
    "virtual-printer": ("virtual", "run a Marlin-like printer on a pty and print its path"),
    "analyze": ("analyze", "estimate print time (motion model + heat-up), energy profile, filament and layers"),
    "telemetry": ("telemetry", "print live power samples (check a charge controller's wiring)"),
    "plan": ("plan", "show the energy plan: forecast, SoC, windows, why jobs wait"),
    "simulate": ("simulate", "simulate printing on recorded weather under a policy"),
    "doctor": ("doctor", "check serial, GPIO, I2C, broker, clock, disk; say what to fix"),
    "web": ("web", "the web page: API key, password, address"),
    "print": ("print", "stream one G-code file to a printer (no daemon)"),
    "hub": ("hub", "the reference hub: serve, keys, provisioning, jobs, fleet status"),
}

#: modules under node.commands, in the order ``printnode --help`` lists their commands
COMMAND_MODULES = list(dict.fromkeys(module for module, _ in COMMANDS.values()))
