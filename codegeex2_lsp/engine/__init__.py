"""Everything that knows torch: tokenizer, checkpoint loading, generation, the worker thread."""
