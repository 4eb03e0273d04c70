"""The project's subscribers, one module per concern; workers import every module here
(``HUB_KAFKA_SUBSCRIBERS`` to change the list)."""
