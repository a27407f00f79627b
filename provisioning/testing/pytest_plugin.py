"""pytest plugin (registered through the pytest11 entry point); options are added by the CLI issue."""
