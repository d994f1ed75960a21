"""Tests against real external services: a Kafka broker (marker ``kafka``), RTSP/HTTP media servers
(marker ``network``)."""
