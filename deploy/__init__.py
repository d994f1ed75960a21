"""Deployment assets shipped with the package: the local Kafka broker scripts (kafka/)."""
