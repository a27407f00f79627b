"""Built-in drivers. Each module imports its heavy dependencies inside, on first use."""
