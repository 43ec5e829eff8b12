"""When to print: the PV forecast, the battery's energy model, the pure scheduler and the Planner component."""
