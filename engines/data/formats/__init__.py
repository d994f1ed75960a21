"""One module per on-disk feature layout (each returns a :class:`fusewatch.engines.data.records.FeatureDataset`)."""
