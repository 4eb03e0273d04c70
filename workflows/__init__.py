"""The project's workflows; every module here is loaded by workers (``HUB_MODULES``)."""
