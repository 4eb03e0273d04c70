"""The hub's built-in routes, one module per resource; each only translates HTTP to a call of
the service layer and back."""
