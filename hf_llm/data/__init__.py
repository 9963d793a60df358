"""Data layer: sources and readers, cleaning, dedup, decontamination, tokenizer, packing, the pipeline that runs
them (pipeline.py; selection.py for the global decisions, emit.py for the last pass) and the data card (card.py)."""
