"""The Pi's operations: systemd (notify, watchdog, unit), the journal, clock trust and SD-card care."""
