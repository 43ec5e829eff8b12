"""Solar Print Node: the daemon of an off-grid, solar-powered 3D-print node."""

__version__ = "0.1.0"
