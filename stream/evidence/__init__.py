"""Alert evidence: a rolling on-disk buffer of each camera's packets (:mod:`.segments`), clips and
snapshots cut from it (:mod:`.cut`), and the writer that does so on alert events and publishes
``evidence`` records (:mod:`.writer`)."""
