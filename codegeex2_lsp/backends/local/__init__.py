"""The local backend, everything that knows torch: checkpoint loading, devices, generation."""
