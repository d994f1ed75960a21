"""fusewatch camera side: sources, clip windows, feature extractors, message schema, transports."""

__version__ = "0.1.0"
