"""Data layer: sources, cleaning, dedup, decontamination, tokenizer training, packing, data card."""
