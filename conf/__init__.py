"""The default configuration (default.yaml), a package so it can be read from the job bundle too."""
