"""fusewatch test suite (a package, so test modules import shared helpers as ``tests.<module>``;
public helpers for users live in :mod:`fusewatch.testing`)."""
