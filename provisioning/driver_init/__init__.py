"""One tiny module per built-in scheme, each naming its driver class lazily as ``DRIVER``."""
