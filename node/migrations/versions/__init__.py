"""The revisions, oldest first: ``v0001_initial`` is the schema as Liaison made it before
migrations (``create_all``), so a database made then is recognised and recorded at 0001."""
