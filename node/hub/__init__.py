"""The reference hub: ledger, dispatcher, chunk server, provisioning (``printnode hub ...``)."""
