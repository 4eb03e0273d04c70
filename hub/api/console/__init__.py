"""The web console: see and repair every execution, event and dead letter in a browser.

Served by the API process under ``/ui`` (``create_app`` mounts it), with the same API keys:
read to look, operate to act, run to complete async steps. Pages are rendered on the server
(Jinja2) and refreshed with htmx, both shipped inside the package: ``pip install`` and
``hub api`` are all it takes. Every page reads through ``HubService``, the JSON API's own
service layer; every action is an audited call of the same method the JSON API calls.
"""

from hub.api.console._app import create_console as create_console

__all__ = ["create_console"]
