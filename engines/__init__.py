"""fusewatch inference side: graph-fusion model, incremental graphs, backends, engine service."""
