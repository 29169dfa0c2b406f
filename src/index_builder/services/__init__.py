"""Use cases shared by the CLI and the API: build, read, define."""
