"""Kafka runtime: brokers, consumers, outbox relay."""
