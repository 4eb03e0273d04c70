"""The project's custom HTTP routes (as Medusa's ``src/api``): ``hub api`` includes the
``router`` of every module named in ``HUB_API_ROUTES`` (default ``api.routes``)."""
