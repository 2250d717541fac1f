"""Follow-ups: units that take a finished chain and return evidence about it (the SNI
re-check, the DNS consistency decision; later censor localization and injection fingerprints).
They never edit earlier results: the report is assembled from results plus evidence."""
