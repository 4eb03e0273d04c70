"""The engine: graphs, executions, leases and recovery on top of the store."""
