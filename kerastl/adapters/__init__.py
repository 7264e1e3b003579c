"""Cross-lingual low-resource speech recognition: Adapter, SimAdapter, MetaAdapter, SimAdapter+."""
